"""Counting the S3 requests a store makes, by operation, for tests that assert what a
commit or a restore asks of S3 (not how long it takes)."""

from __future__ import annotations


def requests_of(store) -> dict[str, int]:
    """A dict that counts, from now on, each S3 operation ``store``'s client calls:
    ``{"GetObject": 3, ...}``."""
    counts: dict[str, int] = {}

    def count(model, **_):
        counts[model.name] = counts.get(model.name, 0) + 1

    store.client.meta.events.register("before-call.s3.*", count)
    return counts
