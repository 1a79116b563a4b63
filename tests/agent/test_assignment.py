"""claim_instance: an assignment written only over the version judged free."""

from __future__ import annotations

import pytest

from runctl.agent.assignment import assign_job, claim_instance, read_assignment
from runctl.errors import PreconditionFailed


class LandsThenFails:
    """A store whose conditional writes land and then answer 412, as a retried request
    that finds its own first try does."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def write(self, key, data, **conditions):
        self._inner.write(key, data, **conditions)
        if conditions:
            raise PreconditionFailed(f"{key} changed since it was read")
        return None


def test_a_claim_over_the_version_judged_free_wins(any_store):
    assert claim_instance(any_store, "i-x", "first", judged=None).job_id == "first"
    etag = read_assignment(any_store, "i-x")[1]
    assert claim_instance(any_store, "i-x", "second", judged=etag).job_id == "second"
    assert read_assignment(any_store, "i-x")[0].job_id == "second"


@pytest.mark.parametrize("judged_existing", [False, True])
def test_a_claim_loses_to_an_assignment_written_meanwhile(any_store, judged_existing):
    judged = None
    if judged_existing:
        assign_job(any_store, "i-x", "old")
        judged = read_assignment(any_store, "i-x")[1]
    assign_job(any_store, "i-x", "winner")  # another command, between the judgement and the claim
    with pytest.raises(PreconditionFailed):
        claim_instance(any_store, "i-x", "loser", judged=judged)
    assert read_assignment(any_store, "i-x")[0].job_id == "winner"


def test_a_claim_that_landed_but_answered_412_is_won(local_store):
    claimed = claim_instance(LandsThenFails(local_store), "i-x", "mine", judged=None)
    assert read_assignment(local_store, "i-x")[0].assignment_id == claimed.assignment_id
