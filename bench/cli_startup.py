"""CLI start-up cost: `runctl --help` beside a bare interpreter, and what it imports.

    python bench/cli_startup.py [--runs 20]

Times the console script installed beside sys.executable (same venv), `python -c pass`
and `python -c "import runctl.cli"`, reporting the median wall time of each, and lists which
heavy modules (boto3, botocore, rich, pydantic, ...) are loaded after importing runctl.cli
and after `runctl --help` (each in a fresh interpreter). Prints markdown. Run by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("boto3", "botocore", "rich", "pydantic", "docker", "requests", "urllib3", "moto", "psutil")

PROBE = """
import json, sys
mode = sys.argv[1]
if mode == "help":
    from runctl.cli import main
    try:
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()):
            main(["--help"])
    except SystemExit:
        pass
else:
    import runctl.cli
print(json.dumps([m for m in %r if m in sys.modules]))
""" % (HEAVY,)


def median_wall(argv: list[str], runs: int) -> float:
    subprocess.run(argv, check=True, capture_output=True)  # warm the page cache and .pyc files
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loaded(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    runctl = Path(sys.executable).with_name("runctl")
    if not runctl.exists():
        print(f"no console script at {runctl}; pip install -e . in this venv first", file=sys.stderr)
        return 2
    cases = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("python -c 'import runctl.cli'", [sys.executable, "-c", "import runctl.cli"]),
        ("runctl --help", [str(runctl), "--help"]),
        ("runctl checkpoint --help", [str(runctl), "checkpoint", "--help"]),
    ]
    results = [(name, median_wall(argv, args.runs)) for name, argv in cases]
    base = results[0][1]

    print(f"median of {args.runs} runs; python {sys.version.split()[0]}\n")
    print("| command | median ms | over python -c pass |")
    print("|---|---:|---:|")
    for name, seconds in results:
        print(f"| `{name}` | {seconds * 1000:.0f} | {(seconds - base) * 1000:+.0f} |")
    print()
    for mode, label in (("import", "after `import runctl.cli`"), ("help", "after `runctl --help`")):
        found = loaded(mode)
        print(f"- heavy modules loaded {label}: {', '.join(found) if found else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
