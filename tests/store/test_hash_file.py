"""The hash cache kept across processes (``runctl.store.hash_file`` through ``HashCache`` and
``Snapshots(hash_cache_file=...)``): a restarted agent's first commit reads only what changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runctl.store import hashing
from runctl.store.hash_file import FORMAT, load_hashes
from runctl.store.snapshots import Snapshots

PREFIX = "jobs/job-1/checkpoints/"


def aged(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - 60  # old enough for the hash cache to trust its timestamp
    os.utime(path, (then, then))


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "ckpt"
    aged(root / "model.pt", os.urandom(50_000))
    aged(root / "optim/state.bin", os.urandom(5_000))
    aged(root / "rng.json", b'{"seed": 1}')
    return root


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The files whose content is read to hash them."""
    calls: list[str] = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p: calls.append(Path(p).name) or real(p))
    return calls


def test_a_restarted_agents_first_commit_reads_no_file_content(any_store, folder, tmp_path, reads):
    cache = tmp_path / "run" / "checkpoint-hashes.jsonl"
    first = Snapshots(any_store, PREFIX, hash_cache_file=cache).commit(folder)
    assert sorted(reads) == ["model.pt", "rng.json", "state.bin"] and cache.exists()
    reads.clear()
    # A new process: nothing in memory, only the file.
    assert Snapshots(any_store, PREFIX, hash_cache_file=cache).commit(folder) == first
    assert reads == []
    aged(folder / "rng.json", b'{"seed": 2}')
    assert Snapshots(any_store, PREFIX, hash_cache_file=cache).commit(folder).seq == first.seq + 1
    assert reads == ["rng.json"]


def test_a_file_whose_ctime_moved_is_hashed_again(local_store, folder, tmp_path, reads):
    cache = tmp_path / "hashes.jsonl"
    Snapshots(local_store, PREFIX, hash_cache_file=cache).commit(folder)
    reads.clear()
    # Rewritten in place, same size, its mtime put back (as `touch -r` or a restore tool
    # might): size, mtime and inode all hold, only the ctime tells.
    path = folder / "model.pt"
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"\x00" * 10)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert Snapshots(local_store, PREFIX, hash_cache_file=cache).commit(folder).seq == 2
    assert reads == ["model.pt"]


@pytest.mark.parametrize("content", ["", "not json\n", '{"format": "other"}\n',
                                     f'{{"format": "{FORMAT}"}}\n["a", 1, 2, 3, 4, "zz"]\n'])
def test_a_cache_file_not_in_its_format_is_ignored(local_store, folder, tmp_path, reads, content):
    cache = tmp_path / "hashes.jsonl"
    cache.write_text(content)
    assert load_hashes(cache) == {}
    Snapshots(local_store, PREFIX, hash_cache_file=cache).commit(folder)
    assert len(reads) == 3
    assert len(load_hashes(cache)) == 3  # replaced by a good one


def test_a_restore_fills_the_cache_file(any_store, folder, tmp_path, reads):
    Snapshots(any_store, PREFIX).commit(folder)
    cache, target = tmp_path / "hashes.jsonl", tmp_path / "restored"
    Snapshots(any_store, PREFIX, hash_cache_file=cache).restore(1, target)
    assert set(load_hashes(cache)) == {str(p) for p in target.rglob("*") if p.is_file()}
    reads.clear()
    Snapshots(any_store, PREFIX, hash_cache_file=cache).commit(target)
    assert reads == []


def test_the_agent_keeps_its_cache_in_its_run_folder(local_store, tmp_path):
    from runctl.agent.supervisor import HASH_CACHE_NAME, Agent, AgentOptions
    from runctl.models import JobSpec

    spec = JobSpec("j", ("true",), local_store.url, str(tmp_path / "ckpt"), str(tmp_path))
    agent = Agent(spec, local_store, [], AgentOptions(run_dir=tmp_path / "run"))
    assert agent.snapshots._hashes._file == tmp_path / "run" / HASH_CACHE_NAME

