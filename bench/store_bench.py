"""Checkpoint store throughput: runctl snapshots beside cp -r and the AWS CLI.

    python bench/store_bench.py [--size-mib 1024] [--files 8] [--workdir DIR] [--no-s3] [--no-local]
    python bench/store_bench.py --small-files 10000 [--small-kib 4] [--rounds 5]
    python bench/store_bench.py --incremental [--size-mib 1024] [--files 8] [--rounds 5]

Writes --files files of random data (--size-mib in all) into a work folder once (kept for
the next run), then times, on a local-folder store and on a moto S3 server this script
starts itself:
  - a first commit (every file hashed and uploaded), a restore into an empty folder,
  - a commit with nothing changed (hash cache warm) and one with one file changed (one
    upload, the rest copied inside the store),
beside `cp -r` of the same files (local) and `aws s3 cp --recursive` up and down against
the same moto server (run in a child process, so that it does not share this process's
GIL; --moto-in-process to compare). Prints a markdown table. Run by hand; not part of the test suite.

--small-files N: N files of --small-kib KiB in 100 folders, local store only. Each round
(interleaved, so that the machine's load hits both sides alike): a first commit into an empty
store beside `cp -r` + `sync` of the same folder, a restore into an empty folder beside
`cp -r` of the snapshot folder + `sync`. Every timed step starts after an untimed `sync`.
Prints each round and the ratios' min / median / max.

--incremental: the --files x --size-mib data, local store only. Each round: a first commit
into an empty store, then one file changed and committed again by the same instance (hash
cache warm) and by a new instance (cold cache: a restarted agent), beside `cp -r` + `sync`.
Also prints the bytes this process read (/proc/self/io rchar) during each commit.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1 << 20


def make_data(folder: Path, size_mib: int, files: int) -> int:
    """Random files totalling size_mib (reused when already there). Returns the byte count."""
    each = size_mib * MIB // files
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        path = folder / f"shard-{i:02d}.bin"
        if path.exists() and path.stat().st_size == each:
            continue
        rng = random.Random(i)
        with open(path, "wb") as f:
            left = each
            while left:
                n = min(left, 16 * MIB)
                f.write(rng.randbytes(n))
                left -= n
    # Written "earlier": the hash cache trusts only files not modified in the last seconds.
    then = time.time() - 3600
    for path in folder.iterdir():
        os.utime(path, (then, then))
    for extra in folder.iterdir():
        if extra.name >= f"shard-{files:02d}.bin" and extra.name.startswith("shard-"):
            extra.unlink()
    return each * files


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def touch_one(source: Path, at: int = 0) -> None:
    """Change the first shard's content (same size) so that one file must be uploaded: the
    byte at offset ``at`` flipped (twice: the original content again)."""
    path = sorted(source.iterdir())[0]
    with open(path, "r+b") as f:
        f.seek(at)
        first = f.read(1)
        f.seek(at)
        f.write(bytes([first[0] ^ 0xFF]))
    # Dated an hour back (the hash cache trusts only files not modified lately), each time a
    # different time: the other files keep theirs, so their cached hashes hold.
    then = time.time() - 3600
    os.utime(path, (then, then))


def snapshot_rows(label: str, store, source: Path, restore_dir: Path, total: int, workers: int) -> list[tuple]:
    from runctl.store.snapshots import Snapshots

    rows = []
    label = f"{label}, {workers} workers"
    snaps = Snapshots(store, "jobs/bench/checkpoints/", workers=workers)
    t = timed(lambda: snaps.commit(source))
    rows.append((f"runctl commit, first ({label})", t, total))
    t = timed(lambda: snaps.restore(snaps.latest(), fresh(restore_dir)))
    rows.append((f"runctl restore into an empty folder ({label})", t, total))
    # The periodic sync case: nothing changed since the last commit (hashes cached).
    warm = Snapshots(store, "jobs/bench/checkpoints/", workers=workers)
    warm.commit(source)  # fills this instance's hash cache (nothing new is written)
    t = timed(lambda: warm.commit(source))
    rows.append((f"runctl commit, nothing changed, warm cache ({label})", t, None))
    touch_one(source)
    one = total // len(list(source.iterdir()))
    t = timed(lambda: warm.commit(source))
    rows.append((f"runctl commit, 1 file changed: 1 upload + copies ({label})", t, one))
    touch_one(source)  # back to the original bytes
    return rows


def local_rows(work: Path, source: Path, total: int, workers: int) -> list[tuple]:
    from runctl.store.local import LocalStore

    rows = snapshot_rows("local", LocalStore(fresh(work / "store")), source, work / "restored", total, workers)
    t = timed(lambda: subprocess.run(["cp", "-r", str(source), str(fresh(work / "cp-copy"))], check=True))
    rows.append(("cp -r (local, no fsync)", t, total))
    t = timed(lambda: (subprocess.run(["cp", "-r", str(source), str(fresh(work / "cp-copy"))], check=True),
                       os.sync()))
    rows.append(("cp -r then sync (local)", t, total))
    shutil.rmtree(work / "cp-copy", ignore_errors=True)
    return rows


MOTO_CHILD = """
import logging, sys, time
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("%s:%s" % server.get_host_and_port(), flush=True)
sys.stdin.read()  # until the parent closes it
server.stop()
"""


@contextlib.contextmanager
def moto_endpoint(in_process: bool):
    """A ThreadedMotoServer, by default in a child process so that the client under test
    and the emulator do not share one GIL (the AWS CLI runs in its own process too)."""
    if in_process:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
        return
    child = subprocess.Popen([sys.executable, "-c", MOTO_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        yield f"http://{child.stdout.readline().strip()}"
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def s3_rows(work: Path, source: Path, total: int, workers: int, *, in_process: bool) -> list[tuple]:
    import boto3

    from runctl.store.s3 import S3Store

    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
    with moto_endpoint(in_process) as endpoint:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        store = S3Store("bench", "runctl", endpoint_url=endpoint)
        rows = snapshot_rows("moto S3", store, source, work / "restored-s3", total, workers)
        aws = ["aws", "--endpoint-url", endpoint, "s3", "cp", "--recursive", "--only-show-errors"]
        t = timed(lambda: subprocess.run([*aws, str(source), "s3://bench/awscli/"], check=True, env=env))
        rows.append(("aws s3 cp --recursive, upload (moto S3)", t, total))
        target = fresh(work / "awscli-down")
        t = timed(lambda: subprocess.run([*aws, "s3://bench/awscli/", str(target)], check=True, env=env))
        rows.append(("aws s3 cp --recursive, download (moto S3)", t, total))
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(work / "restored-s3", ignore_errors=True)
        return rows


def synced(fn) -> float:
    """Time ``fn`` after an untimed sync, so that earlier steps' dirty pages are not its cost."""
    os.sync()
    return timed(fn)


def read_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def cp_sync(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    os.sync()


def make_small(folder: Path, count: int, kib: int) -> None:
    """``count`` files of ``kib`` KiB of random data in 100 sub-folders (kept for the next run)."""
    marker = folder.parent / f".{folder.name}.made"
    if marker.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    rng = random.Random(7)
    for i in range(count):
        path = folder / f"d{i % 100:02d}" / f"f{i:06d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(kib * 1024))
    then = time.time() - 3600
    for path in folder.rglob("*"):
        os.utime(path, (then, then))
    marker.touch()


def spread(values: list[float]) -> str:
    values = sorted(values)
    return f"{values[0]:.2f} / {values[len(values) // 2]:.2f} / {values[-1]:.2f}"


def small_files_case(work: Path, count: int, kib: int, rounds: int, workers: int) -> None:
    from runctl.store.local import LocalStore
    from runctl.store.snapshots import Snapshots

    source = work / f"small-{count}x{kib}k"
    make_small(source, count, kib)
    print(f"{count} files of {kib} KiB in {source}; {os.cpu_count()} CPUs; {rounds} rounds, "
          f"workers={workers}", file=sys.stderr)
    print("| round | commit s | cp -r+sync s | ratio | restore s | cp -r+sync s | ratio | restore vs cp -r (no sync) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    commit_ratios, restore_ratios, nosync_ratios = [], [], []
    for r in range(rounds):
        store_root = fresh(work / "small-store")
        snaps = Snapshots(LocalStore(store_root), "jobs/bench/checkpoints/", workers=workers)
        commit = synced(lambda: snaps.commit(source))
        copy = fresh(work / "small-cp")  # removed before the clock starts, and synced
        cp_commit = synced(lambda: cp_sync(source, copy))
        snapshot_dir = store_root / "jobs/bench/checkpoints/00000001"
        restored = fresh(work / "small-restored")
        restore = synced(lambda: snaps.restore(1, restored))
        copy = fresh(work / "small-cp")
        cp_restore = synced(lambda: cp_sync(snapshot_dir, copy))
        copy = fresh(work / "small-cp")
        cp_nosync = synced(lambda: subprocess.run(["cp", "-r", str(snapshot_dir), str(copy)], check=True))
        fresh(work / "small-cp")
        fresh(work / "small-restored")
        commit_ratios.append(commit / cp_commit)
        restore_ratios.append(restore / cp_restore)
        nosync_ratios.append(restore / cp_nosync)
        print(f"| {r + 1} | {commit:.2f} | {cp_commit:.2f} | {commit_ratios[-1]:.2f} | {restore:.2f} | "
              f"{cp_restore:.2f} | {restore_ratios[-1]:.2f} | {nosync_ratios[-1]:.2f} |", flush=True)
    print(f"\nratio min / median / max over {rounds} rounds: commit vs cp -r + sync {spread(commit_ratios)}; "
          f"restore vs cp -r + sync {spread(restore_ratios)}; restore vs cp -r (no sync) {spread(nosync_ratios)}")
    for leftover in ("small-store", "small-cp", "small-restored"):
        shutil.rmtree(work / leftover, ignore_errors=True)


def incremental_case(work: Path, size_mib: int, files: int, rounds: int, workers: int) -> None:
    from runctl.store.local import LocalStore
    from runctl.store.snapshots import Snapshots

    source = work / "source"
    total = make_data(source, size_mib, files)
    one = total // files
    print(f"{files} files x {one / MIB:.0f} MiB in {source}; {rounds} rounds, workers={workers}", file=sys.stderr)
    print("| round | full commit s | cp -r+sync s | 1 changed, warm cache s | ratio to full | MiB read | "
          "1 changed, new instance s | ratio to full | MiB read |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    warm_ratios, cold_ratios, full_vs_cp = [], [], []
    for r in range(rounds):
        store = LocalStore(fresh(work / "inc-store"))
        snaps = Snapshots(store, "jobs/bench/checkpoints/", workers=workers)
        full = synced(lambda: snaps.commit(source))
        copy = fresh(work / "inc-cp")
        cp = synced(lambda: cp_sync(source, copy))
        shutil.rmtree(work / "inc-cp", ignore_errors=True)
        touch_one(source)  # content no snapshot holds
        before = read_bytes()
        warm = synced(lambda: snaps.commit(source))
        warm_read = read_bytes() - before
        # A restarted agent: new store and Snapshots instances, nothing cached.
        restarted = Snapshots(LocalStore(store.root), "jobs/bench/checkpoints/", workers=workers)
        touch_one(source, at=1)  # again content no snapshot holds
        before = read_bytes()
        cold = synced(lambda: restarted.commit(source))
        cold_read = read_bytes() - before
        touch_one(source)  # back to the original bytes
        touch_one(source, at=1)
        warm_ratios.append(warm / full)
        cold_ratios.append(cold / full)
        full_vs_cp.append(full / cp)
        print(f"| {r + 1} | {full:.2f} | {cp:.2f} | {warm:.3f} | {warm / full:.3f} | {warm_read / MIB:.0f} | "
              f"{cold:.2f} | {cold / full:.2f} | {cold_read / MIB:.0f} |", flush=True)
    print(f"\nratio min / median / max over {rounds} rounds: full commit vs cp -r + sync {spread(full_vs_cp)}; "
          f"1 changed (warm) vs full {spread(warm_ratios)}; 1 changed (new instance) vs full {spread(cold_ratios)}")
    shutil.rmtree(work / "inc-store", ignore_errors=True)


def hash_row(source: Path, total: int) -> tuple:
    def run() -> None:
        for path in sorted(source.iterdir()):
            with open(path, "rb") as f:
                hashlib.file_digest(f, "sha256")

    return ("sha256 of every file, one thread (page cache warm)", timed(run), total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="total size of the files (default 1024)")
    parser.add_argument("--files", type=int, default=8, help="how many files (default 8)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "runctl-store-bench")
    parser.add_argument("--workers", type=int, default=8, help="Snapshots(workers=...) (default 8)")
    parser.add_argument("--no-s3", action="store_true", help="skip the moto S3 runs")
    parser.add_argument("--no-local", action="store_true", help="skip the local-folder runs")
    parser.add_argument("--moto-in-process", action="store_true",
                        help="run moto in this process (shares the GIL with the client; slower)")
    parser.add_argument("--small-files", type=int, default=0, metavar="N",
                        help="run only the many-small-files case with N files (local store)")
    parser.add_argument("--small-kib", type=int, default=4, help="size of each small file (default 4 KiB)")
    parser.add_argument("--incremental", action="store_true",
                        help="run only the one-file-changed case (local store)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --small-files/--incremental")
    args = parser.parse_args()
    if args.small_files:
        small_files_case(args.workdir, args.small_files, args.small_kib, args.rounds, args.workers)
        return 0
    if args.incremental:
        incremental_case(args.workdir, args.size_mib, args.files, args.rounds, args.workers)
        return 0

    source = args.workdir / "source"
    start = time.perf_counter()
    total = make_data(source, args.size_mib, args.files)
    print(f"data: {args.files} files, {total / MIB:.0f} MiB in {source} ({time.perf_counter() - start:.1f} s to "
          f"prepare); {os.cpu_count()} CPUs; python {sys.version.split()[0]}", file=sys.stderr)
    rows = [hash_row(source, total)]
    if not args.no_local:
        rows += local_rows(args.workdir, source, total, args.workers)
    if not args.no_s3:
        rows += s3_rows(args.workdir, source, total, args.workers, in_process=args.moto_in_process)

    print(f"\n{args.files} files x {total // args.files / MIB:.0f} MiB = {total / MIB:.0f} MiB\n")
    print("| operation | seconds | MB/s |")
    print("|---|---:|---:|")
    for name, seconds, nbytes in rows:
        rate = f"{nbytes / 1e6 / seconds:.0f}" if nbytes else "-"
        print(f"| {name} | {seconds:.2f} | {rate} |")
    for leftover in ("store", "restored", "restored-s3"):
        shutil.rmtree(args.workdir / leftover, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
