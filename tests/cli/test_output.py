"""The output helpers every command shares."""

from __future__ import annotations

from runctl.cli._output import human_size


def test_human_size():
    assert [human_size(n) for n in (0, 1023, 1024, 5 * 1024**3, 3 * 1024**5)] == [
        "0 B", "1023 B", "1.0 KiB", "5.0 GiB", "3072.0 TiB"]
