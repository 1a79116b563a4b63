"""One machine's poster for the SIGKILL test (tests/store/test_sharded.py): run, then killed.

    python part_poster.py STORE_URL PREFIX INSTANCE SOURCE_DIR

Posts the part of INSTANCE to the open round; prints "uploading KEY" (flushed) right before
each file's upload starts, so the test can kill it in the middle of one.
"""

from __future__ import annotations

import sys
from pathlib import Path


class AnnouncingStore:
    """Forwards every call; says when an upload starts."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def upload(self, path, key, **kwargs):
        print(f"uploading {key}", flush=True)
        return self._inner.upload(path, key, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def main(argv: list[str]) -> int:
    store_url, prefix, instance, source = argv
    from runctl.store import open_store
    from runctl.store.sharded import ShardedRounds
    from runctl.store.snapshots import Snapshots

    rounds = ShardedRounds(Snapshots(AnnouncingStore(open_store(store_url)), prefix, workers=2))
    rnd = rounds.current_round()
    print("ready", flush=True)
    rounds.post_part(rnd, instance, Path(source))
    print("posted", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
