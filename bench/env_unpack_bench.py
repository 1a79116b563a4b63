"""How fast an environment archive unpacks as it streams in, for the ways runctl could do it:
the archive read from a local file in 1 MiB chunks and hashed, as a GET body would be.

    python bench/env_unpack_bench.py [--rounds 3] [FOLDER ...]

FOLDER: what to archive (default: this interpreter's torch and numpy packages). Ways, run
interleaved in each round:

- zlib + GNU tar (runctl's choice): inflated in this process, piped into ``tar -xf -``;
- tarfile r|gz: Python's tarfile in stream mode, what runctl does without GNU tar;
- GNU tar -xzf -: the gzip'd stream piped into tar, which inflates with gzip;
- uncompressed, GNU tar -xf -: no decompression at all, 3-4x the bytes to download.

Prints min / median / max seconds per way, the archive sizes and the load average.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path


class _Chunks:
    """A file read as a GET body is: 1 MiB at a time."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")

    def read(self, size: int = -1) -> bytes:
        return self._file.read(1 << 20 if size < 0 else size)

    def close(self) -> None:
        self._file.close()


def _runctl(archive: Path, out: Path, *, gnu: bool) -> None:
    from runctl.environment import stream_unpack

    data_size, digest = archive.stat().st_size, _sha256(archive)
    found = stream_unpack.gnu_tar
    stream_unpack.gnu_tar = found if gnu else (lambda: None)
    body = _Chunks(archive)
    try:
        stream_unpack.unpack_stream(body, out, archive.name, expect_size=data_size, expect_sha256=digest)
    finally:
        body.close()
        stream_unpack.gnu_tar = found


def _tar_pipe(archive: Path, out: Path, flags: str) -> None:
    out.mkdir()
    tar = subprocess.Popen(["tar", flags, "-", "-C", str(out), "--no-same-owner"], stdin=subprocess.PIPE)
    digest = hashlib.sha256()
    with open(archive, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            tar.stdin.write(chunk)
    tar.stdin.close()
    if tar.wait() != 0:
        raise RuntimeError(f"tar {flags} failed")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("folders", nargs="*", type=Path)
    args = parser.parse_args(argv)
    if not args.folders:
        import numpy
        import torch

        args.folders = [Path(torch.__file__).parent, Path(numpy.__file__).parent]
    with tempfile.TemporaryDirectory(prefix="runctl-unpack-bench-") as work:
        work = Path(work)
        gz, plain = work / "env.tar.gz", work / "env.tar"
        with tarfile.open(gz, "w:gz", compresslevel=1) as tar:  # as runctl.environment.cache.pack does
            for folder in args.folders:
                tar.add(folder, arcname=folder.name)
        with tarfile.open(plain, "w") as tar:
            for folder in args.folders:
                tar.add(folder, arcname=folder.name)
        ways = {"zlib + GNU tar -xf - (runctl)": lambda out: _runctl(gz, out, gnu=True),
                "tarfile r|gz (runctl without GNU tar)": lambda out: _runctl(gz, out, gnu=False),
                "GNU tar -xzf -": lambda out: _tar_pipe(gz, out, "-xzf"),
                "uncompressed, GNU tar -xf -": lambda out: _tar_pipe(plain, out, "-xf")}
        times: dict[str, list[float]] = {name: [] for name in ways}
        loads = [os.getloadavg()[0]]
        for n in range(args.rounds):
            for name, way in ways.items():
                out = work / "out"
                started = time.monotonic()
                way(out)
                times[name].append(time.monotonic() - started)
                shutil.rmtree(out)
                loads.append(os.getloadavg()[0])
            print(f"round {n + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), file=sys.stderr,
                  flush=True)
        print(f"archive: {', '.join(f.name for f in args.folders)}; gzip -1 {gz.stat().st_size / 1e6:.0f} MB, "
              f"uncompressed {plain.stat().st_size / 1e6:.0f} MB; {args.rounds} round(s), seconds min / median / "
              f"max; 1-minute load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores\n")
        print("| way | seconds | MB/s of archive (median) |\n|---|---:|---:|")
        for name, values in times.items():
            size = (plain if name.startswith("uncompressed") else gz).stat().st_size
            cell = name.replace("|", "\\|")  # a markdown table's cell
            print(f"| {cell} | {min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f} | "
                  f"{size / 1e6 / statistics.median(values):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
