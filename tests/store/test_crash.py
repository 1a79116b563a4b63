"""Crash safety: a writer committing snapshots in a loop is SIGKILLed at random moments.

After every kill the latest complete snapshot must verify and hold exactly the files of its
generation, every older complete snapshot must verify too, the latest never goes backwards,
and the next writer carries on from there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runctl.store import open_store
from runctl.store.manifest import parse_seq_name
from runctl.store.snapshots import Snapshots

HELPER = Path(__file__).with_name("crash_writer.py")
_spec = importlib.util.spec_from_file_location("crash_writer", HELPER)
crash_writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash_writer)


def start_writer(store_url: str, source: Path, *extra: str) -> subprocess.Popen:
    """The writer, once it says it is ready (imports done, store opened): on a busy machine
    starting Python alone can take longer than a kill delay, and no kill would land in a commit."""
    writer = subprocess.Popen([sys.executable, str(HELPER), store_url, str(source), *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if writer.stdout.readline() != b"ready\n":
        writer.wait()
        pytest.fail(f"the writer did not start: {writer.stderr.read().decode()}")
    return writer


def check_store(snaps: Snapshots, scale: float, tmp: Path, last_gen: int) -> tuple[int, int]:
    """Assert the store is consistent; return (latest gen, incomplete folders seen)."""
    infos = snaps.list()
    if not infos:
        assert last_gen == 0, "the latest complete snapshot disappeared"
        return 0, len(snaps.store.list_dirs(snaps.prefix))
    latest = infos[-1]
    assert snaps.latest() == latest
    gen = latest.metadata["gen"]
    assert gen >= last_gen, f"latest went back from generation {last_gen} to {gen}"
    for info in infos:
        assert snaps.verify(info) == [], f"snapshot {info.seq} does not verify"
        expected = crash_writer.expected_files(info.metadata["gen"], scale)
        assert {f.path: (f.size, f.sha256) for f in info.files} == {
            path: (len(data), hashlib.sha256(data).hexdigest()) for path, data in expected.items()
        }, f"snapshot {info.seq} does not hold generation {info.metadata['gen']}"
    target = tmp / f"restore-{uuid.uuid4().hex[:8]}"
    snaps.restore(latest, target)
    restored = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert restored == crash_writer.expected_files(gen, scale)
    seqs = [s for s in map(parse_seq_name, snaps.store.list_dirs(snaps.prefix)) if s is not None]
    return gen, sum(1 for s in seqs if s not in {i.seq for i in infos})


def crash_loop(store_url: str, tmp_path: Path, *, kills: int, delays: tuple[float, float], scale: float,
               seed: int) -> None:
    rng = random.Random(seed)
    snaps = Snapshots(open_store(store_url), crash_writer.PREFIX)
    source = tmp_path / "source"
    last_gen = incomplete_seen = 0
    for _ in range(kills):
        writer = start_writer(store_url, source, "--scale", str(scale))
        time.sleep(rng.uniform(*delays))
        if writer.poll() is not None:
            pytest.fail(f"the writer exited early: {writer.stderr.read().decode()}")
        writer.kill()
        writer.wait()
        writer.stderr.close()
        writer.stdout.close()
        last_gen, incomplete = check_store(snaps, scale, tmp_path, last_gen)
        incomplete_seen += incomplete
    assert last_gen > 0, "no snapshot was ever completed: make the kill delays longer"
    # The kills did land inside commits (or prunes) now and then, not only between them.
    assert incomplete_seen > 0

    # The next commit after a crash works, and carries on from the latest generation.
    writer = start_writer(store_url, source, "--scale", str(scale), "--once")
    _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err.decode()
    gen, _ = check_store(snaps, scale, tmp_path, last_gen)
    assert gen == last_gen + 1


def test_sigkill_at_random_moments_local(tmp_path):
    crash_loop(str(tmp_path / "store"), tmp_path, kills=25, delays=(0.05, 0.6), scale=1.0, seed=20261129)


def test_sigkill_at_random_moments_s3(s3_bucket, tmp_path):
    # The writer reaches moto through AWS_ENDPOINT_URL (set by the moto_server fixture).
    crash_loop(f"s3://{s3_bucket}/team", tmp_path, kills=12, delays=(0.8, 2.5), scale=0.5, seed=7)
