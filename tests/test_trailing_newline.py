"""Validation patterns end with ``\\Z``, not ``$``: ``$`` also matches before a trailing
newline, so ``"job\\n"`` would pass as a job id and a newline would reach a store key, a
systemd unit or the instance's user data."""

from __future__ import annotations

import pytest

from runctl.backends.aws import bootstrap, instance_types, session
from runctl.cli.aws import logs as aws_logs
from runctl.errors import UsageError
from runctl.store import layout, manifest, retention

INSTANCE = "i-0123456789abcdef0"


@pytest.mark.parametrize(("pattern", "valid"), [
    (layout.JOB_ID_PATTERN, "job"),
    (aws_logs.INSTANCE_ID, INSTANCE),
    (manifest._SHA256, "a" * 64),
], ids=["job id", "aws logs instance id", "manifest sha256"])
def test_a_pattern_refuses_a_trailing_newline(pattern, valid):
    assert pattern.match(valid)
    assert not pattern.match(valid + "\n")


@pytest.mark.parametrize("check", [
    lambda suffix: session.check_instance_id(INSTANCE + suffix),
    lambda suffix: instance_types.check_shape("t3.medium" + suffix),
    lambda suffix: bootstrap._check_env({"FOO" + suffix: "1"}),
    lambda suffix: bootstrap.render_user_data(wheel_url="s3://b/runctl.whl", store_url="s3://b/runctl",
                                              prefix="/opt/runctl" + suffix),
], ids=["instance id", "instance type", "agent env name", "install prefix"])
def test_a_check_refuses_a_trailing_newline(check):
    check("")
    with pytest.raises(UsageError):
        check("\n")


def test_a_snapshot_folder_name_with_a_trailing_newline_is_no_seq():
    assert retention.seq_of("00000005") == 5
    assert retention.seq_of("00000005\n") is None
