"""Which tests start a moto server, and how many: a count that can be repeated.

    python bench/moto_servers.py [PATHS...]      (default: tests/)

Collects the suite (``pytest --collect-only``: nothing runs) and sorts every test by what
emulates AWS for it:

- ``own server``: the test starts a moto server of its own: a FakeCloud made in the test or
  its ``cloud`` fixture without the session's server (``moto_server`` not among its
  fixtures), ``python -m runctl.testing.cloud`` run by the test (the command line always
  starts its own), or a fake-cloud block of the docs.
- ``in-process moto``: ``mock_aws`` (a fresh in-process backend per test, no server).
- ``session server``: the test uses ``moto_server`` (one ThreadedMotoServer per pytest
  session, per xdist worker), directly or through a fixture (a FakeCloud harness of its own
  over that server, too), and starts no server itself.
- the rest use no moto at all.

Fixtures asked for at run time (``request.getfixturevalue``: ``any_store[s3]``, the EC2 side
of tests/backends/aws/test_aws_compute.py) are not seen by a collection: such tests count as
``no moto`` although they use the session's server. A test starting a server of its own is
always seen. Prints one line per file with counts, then the totals, as markdown. Run by hand.
"""

from __future__ import annotations

import collections
import inspect
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KINDS = ("own server", "in-process moto", "session server", "no moto")


def kind_of(item) -> str:
    fixtures = set(getattr(item, "fixturenames", ()))
    source = _source(item)
    block = getattr(item, "callspec", None) and item.callspec.params.get("block")
    if block is not None and hasattr(block, "fake_cloud"):  # tests/test_docs.py: a block of the docs
        runs = getattr(item, "originalname", "") == "test_runnable_block"
        # run in the fake cloud's command line, or running it itself
        return "own server" if runs and (block.fake_cloud or "runctl.testing.cloud" in block.text) else "no moto"
    if "runctl.testing.cloud" in source:
        return "own server"  # the command line always starts one
    if ("FakeCloud(" in source or _fake_cloud_fixture(item)) and "moto_server" not in fixtures:
        return "own server"  # a harness with a server of its own (all of them, before they shared)
    if "mock_aws" in source:
        return "in-process moto"
    if "moto_server" in fixtures:
        return "session server"
    return "no moto"


def _fake_cloud_fixture(item) -> bool:
    """The test uses a fixture named ``cloud`` that makes a FakeCloud."""
    definitions = getattr(item, "_fixtureinfo", None) and item._fixtureinfo.name2fixturedefs.get("cloud")
    return bool(definitions) and "FakeCloud" in inspect.getsource(definitions[-1].func)


def _source(item) -> str:
    function = getattr(item, "function", None)
    if function is None:
        return ""
    try:
        text = inspect.getsource(function)
    except (OSError, TypeError):
        return ""
    # A decorator on the class (or the module's) counts too: look at the module's text.
    module = inspect.getmodule(function)
    if module is not None and "@mock_aws\nclass" in inspect.getsource(module):
        text += "mock_aws"
    return text


class Counter:
    def __init__(self) -> None:
        self.by_file: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            self.by_file[item.nodeid.split("::")[0]][kind_of(item)] += 1


def main(argv: list[str]) -> int:
    counter = Counter()
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *(argv or ["tests"])], plugins=[counter])
    if code not in (0, 5):
        return int(code)
    totals: collections.Counter = collections.Counter()
    print("\n| file | " + " | ".join(KINDS) + " |")
    print("|---|" + "---|" * len(KINDS))
    for path in sorted(counter.by_file):
        counts = counter.by_file[path]
        totals.update(counts)
        if counts["no moto"] != sum(counts.values()):
            print(f"| {path} | " + " | ".join(str(counts[k]) for k in KINDS) + " |")
    print("| **total** | " + " | ".join(str(totals[k]) for k in KINDS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
