"""Peak memory of a snapshot with many files: listing it and planning its restore.

    python bench/manifest_memory_bench.py [--files 300000]

Each step runs in a child process of its own and reports that process's peak RSS
(VmHWM) beside a child that only imports runctl's store: the difference is what the
step holds. The manifest (--files entries, paths in 1000 folders) is written to a folder store
once; the steps read it back as a restarted agent would: ``Snapshots.list()`` (every manifest
read and validated), and the restore plan (the manifest validated, each destination checked
inside the target, every folder resolved once), without downloading the files.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import sys, time
from pathlib import Path
from runctl.store.local import LocalStore
from runctl.store.snapshot_restore import safe_destination
from runctl.store.snapshots import Snapshots
step, root, target = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
snaps = Snapshots(LocalStore(root), "jobs/bench/checkpoints/")
start = time.perf_counter()
if step == "list":
    infos = snaps.list()
    assert len(infos[-1].files) > 0
elif step == "plan":
    info = snaps.get(1)
    resolved = {}
    checked = [(f, safe_destination(target, f.path, resolved)) for f in info.files]
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report its parent's peak.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(hwm / 1024, seconds)
"""


def make_manifest(root: Path, count: int) -> None:
    from runctl.models import FileEntry
    from runctl.store.local import LocalStore
    from runctl.store.manifest import build_manifest, manifest_key

    store = LocalStore(root)
    key = manifest_key("jobs/bench/checkpoints/", 1)
    if store.exists(key):
        return
    files = [FileEntry(f"shard-{i % 1000:04d}/part-{i:07d}.bin", 4096 + i, f"{i:064x}") for i in range(count)]
    store.write(key, build_manifest(1, "2026-12-06T08:00:00.000Z", files, {}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300_000)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "runctl-manifest-bench")
    args = parser.parse_args()
    root = args.workdir / f"store-{args.files}"
    make_manifest(root, args.files)
    size = next(root.rglob("MANIFEST.json")).stat().st_size
    print(f"{args.files} entries, manifest {size / 2**20:.1f} MiB")
    print("| step | peak RSS MiB | above the baseline | seconds |")
    print("|---|---:|---:|---:|")
    rows = {}
    for step in ("baseline", "list", "plan"):
        out = subprocess.run([sys.executable, "-c", CHILD, step, str(root), str(args.workdir / "target")],
                             check=True, capture_output=True, text=True).stdout.split()
        rows[step] = float(out[0]), float(out[1])
        above = rows[step][0] - rows["baseline"][0]
        print(f"| {step} | {rows[step][0]:.0f} | {above:.0f} | {rows[step][1]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
