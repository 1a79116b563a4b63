"""A resumable data-processing job: text shards in, tokenized shards out (runctl's example).

It reads the input shards (``*.txt``) from a folder or ``s3://bucket/prefix``, normalizes
and tokenizes every line (Unicode NFKC, case-folded, words and numbers), and writes one
JSON-lines shard per input shard to another folder or S3 prefix. What makes it resumable:

- each output shard is written in one atomic step (a local file goes to a temporary name
  and is renamed; an S3 PUT is all or nothing): no reader ever sees half a shard;
- after each shard it saves the progress (the shards done and their outputs' sha256) with
  ``runctl.save_atomic`` in ``runctl.checkpoint_dir()``; runctl puts it in the store and
  restores it before the next attempt, which resumes from it (``RUNCTL_RESUME_FROM``, or
  ``--resume PATH``) and skips the shards it lists;
- on SIGTERM (a spot notice, a rehearsal) it abandons the shard in hand, of which nothing
  was written, and exits 143; the next attempt does that shard.

A shard written just before a crash that left no progress behind is done again and gets
the same bytes: the transform is deterministic. It ends with one JSON line
``{"shards_total": N, "shards_processed": P, "shards_skipped": S, "outputs_sha256": "..."}``;
``outputs_sha256`` is the same for a run that was interrupted and resumed as for one that
ran straight through.

    python training/examples/data_processing.py --generate-input 20 --input data/raw
    runctl run training/examples/data_processing.py --rehearse 2 --rehearse-at 2s,2s \\
        -- --input data/raw --output data/tokens --slow 0.3
    python training/examples/data_processing.py --input data/raw --output data/tokens  # without runctl
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import random
import re
import signal
import sys
import time
import unicodedata
from pathlib import Path

import runctl
from runctl.errors import RunctlError, UsageError
from runctl.store import open_store, parse_store_url

PROGRESS = "progress.json"  # the checkpoint: the only file this job keeps in checkpoint_dir()
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # letters and digits, with inner apostrophes


# -- the transform: small, pure and deterministic ---------------------------------------------

def tokenize(line: str) -> list[str]:
    return WORD.findall(unicodedata.normalize("NFKC", line).casefold())


def transform_shard(name: str, text: str, should_stop, slow: float = 0.0) -> bytes | None:
    """The output shard for input shard ``name``, or None when asked to stop part-way."""
    lines = text.splitlines()
    pause = slow / max(1, len(lines))
    out = []
    for number, line in enumerate(lines, 1):
        if should_stop():
            return None
        tokens = tokenize(line)
        if tokens:
            out.append(json.dumps({"source": name, "line": number, "tokens": tokens}, ensure_ascii=False) + "\n")
        if pause:
            time.sleep(pause)
    return "".join(out).encode()


def output_name(name: str) -> str:
    return name.rsplit(".", 1)[0] + ".jsonl"


def combined_sha256(done: dict) -> str:
    """One hash over every output shard's name and sha256, in name order."""
    lines = "".join(f"{entry['output']} {entry['sha256']}\n" for _, entry in sorted(done.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


# -- the store side ---------------------------------------------------------------------------

def open_input(url: str):
    scheme, location, _prefix = parse_store_url(url)
    if scheme == "file" and not Path(location).is_dir():
        raise UsageError(f"input {url} does not exist (or is not a folder); "
                         "create sample shards with --generate-input N")
    return open_store(url)


def list_shards(store, pattern: str) -> list[str]:
    return [obj.key for obj in store.list("") if fnmatch.fnmatch(obj.key, pattern)]


def generate_input(url: str, count: int, lines: int) -> None:
    """Write ``count`` sample shards of ``lines`` lines each, the same every time."""
    words = ["The", "model", "Café", "naïve", "DATA", "ﬁle", "shard", "Straße", "spot", "１２３", "GPU",
             "don't", "re-run", "checkpoint", "Ünïcödé", "x86_64", "résumé", "42", "token", "ＡＢＣ"]
    store = open_store(url)
    for i in range(count):
        rng = random.Random(i)
        rows = []
        for _ in range(lines):
            picked = [rng.choice(words) for _ in range(rng.randint(0, 12))]
            indent, gap = rng.choice(["", "  ", "\t"]), rng.choice([" ", "  "])
            rows.append(indent + gap.join(picked) + rng.choice([".", "!", "?", " ...", ""]))
        store.write(f"part-{i:05d}.txt", ("\n".join(rows) + "\n").encode())
    print(f"wrote {count} input shards of {lines} lines to {store.url}", file=sys.stderr)


# -- the job ----------------------------------------------------------------------------------

def load_progress(path: Path | None, source: str, target: str) -> dict:
    if path is None:
        return {}
    if path.is_dir():
        path = path / PROGRESS
    if not path.is_file():
        raise UsageError(f"no progress checkpoint at {path}")
    saved = json.loads(path.read_text())
    if (saved["input"], saved["output"]) != (source, target):
        raise UsageError(f"the checkpoint {path} is for --input {saved['input']} --output {saved['output']}; "
                         "give those, or start a new job")
    return saved["done"]


def run(args: argparse.Namespace) -> int:
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))

    def should_stop() -> bool:
        return stop["requested"] or runctl.interrupted()

    source, target = open_input(args.input), open_store(args.output)
    shards = list_shards(source, args.pattern)
    if not shards:
        raise UsageError(f"no input shards matching {args.pattern!r} in {source.url}")

    checkpoint = runctl.checkpoint_dir() / PROGRESS
    resume = args.resume or runctl.resume_from()
    done = load_progress(resume, source.url, target.url)
    pending = [name for name in shards if name not in done]
    skipped = len(shards) - len(pending)
    print(f"resuming: {skipped} of {len(shards)} shards already done" if resume
          else f"fresh start: {len(shards)} shards",
          f"({source.url} -> {target.url}, progress in {checkpoint})", file=sys.stderr)

    for name in pending:
        data = transform_shard(name, source.read(name).data.decode("utf-8"), should_stop, args.slow)
        if data is None:
            print(f"SIGTERM: abandoned {name} (nothing of it written), {len(done)} shards done, exiting",
                  file=sys.stderr)
            return 143
        target.write(output_name(name), data)  # atomic: the whole shard or nothing
        done[name] = {"output": output_name(name), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        runctl.save_atomic(checkpoint, json.dumps({"input": source.url, "output": target.url, "done": done}))
        runctl.progress(step=len(done), shards_total=len(shards))
        print(f"wrote {output_name(name)}", file=sys.stderr)
        if should_stop() and len(done) < len(shards):
            print(f"SIGTERM: {len(done)} shards done, exiting", file=sys.stderr)
            return 143

    print(json.dumps({"shards_total": len(shards), "shards_processed": len(pending), "shards_skipped": skipped,
                      "outputs_sha256": combined_sha256({n: done[n] for n in shards}), "output": target.url}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="folder or s3://bucket/prefix holding the input shards")
    parser.add_argument("--output", help="folder or s3://bucket/prefix for the output shards")
    parser.add_argument("--pattern", default="*.txt", help="which input files are shards (default *.txt)")
    parser.add_argument("--slow", type=float, default=0.0, metavar="SECONDS",
                        help="extra seconds of work per shard, to watch an interruption (default 0)")
    parser.add_argument("--resume", type=Path, help="progress checkpoint to resume from (default: RUNCTL_RESUME_FROM)")
    parser.add_argument("--generate-input", type=int, metavar="N", help="write N sample shards to --input and exit")
    parser.add_argument("--lines-per-shard", type=int, default=200, help="with --generate-input (default 200)")
    args = parser.parse_args(argv)
    try:
        if args.generate_input is not None:
            generate_input(args.input, args.generate_input, args.lines_per_shard)
            return 0
        if not args.output:
            parser.error("--output is required (unless --generate-input)")
        return run(args)
    except RunctlError as exc:
        print(f"data_processing: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
