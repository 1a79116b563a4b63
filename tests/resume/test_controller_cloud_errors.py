"""The recovery controller tells a lost instance from a failed look at it by the error's
class, never by its words: CloudNotFound means gone; any other CloudError keeps what it knew,
whatever its message says."""

from __future__ import annotations

from runctl.errors import CloudError, CloudNotFound
from runctl.resume.controller import RecoveryController


class Describes:
    """An EC2 adapter whose describe raises the errors given, in turn."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)

    def describe(self, instance_id, **_):
        raise self.errors.pop(0)


def controller(ec2) -> RecoveryController:
    ctl = RecoveryController(None, "job", "i-0123456789abcdef0", ec2=ec2, provisioner=None,
                             launch_spec=lambda info: None, max_restarts=1)
    ctl._state = "running"
    return ctl


def test_not_found_is_gone():
    ctl = controller(Describes(CloudNotFound("instance i-0123456789abcdef0 not found in us-east-1",
                                             code="InvalidInstanceID.NotFound", operation="DescribeInstances")))
    assert ctl._instance_state() is None


def test_another_error_keeps_the_state_whatever_it_says():
    ctl = controller(Describes(CloudError("cannot describe: endpoint not found (HTTP 500)", code="InternalError"),
                               CloudError("AWS is throttling requests")))
    assert ctl._instance_state() == "running"
    assert ctl._instance_state() == "running"
