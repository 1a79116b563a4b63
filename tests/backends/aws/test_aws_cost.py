"""Spot spend from price history, and the comparison with on-demand. Pure."""

from __future__ import annotations

import pytest

from runctl.backends.aws.cost import ON_DEMAND_USD_PER_HOUR, attempt_cost, job_cost, spend, spend_over_azs

H = 3600.0


def test_spend_integrates_the_price_in_effect():
    history = [(0.0, 0.10), (2 * H, 0.40)]
    assert spend(history, 0, 4 * H) == pytest.approx(0.10 * 2 + 0.40 * 2)
    assert spend(history, H, 3 * H) == pytest.approx(0.10 + 0.40)
    assert spend([(5 * H, 0.2)], 0, H) == pytest.approx(0.2)  # before the first record: its price
    assert spend([(-10 * H, 0.3)], 0, 0.5 * H) == pytest.approx(0.15)  # a price from before the start holds
    assert spend(history, 3 * H, 3 * H) == 0 and spend([], 0, H) == 0
    assert spend_over_azs([("a", 0, 0.1), ("b", 0, 0.3)], 0, H) == pytest.approx(0.2)


def test_attempts_and_the_saving_against_on_demand():
    history = [("us-east-1a", 0.0, 0.30), ("us-east-1b", 0.0, 0.90)]
    first = attempt_cost(0, 0, 2 * H, "g5.xlarge", instance_id="i-1", az="us-east-1a", history=history)
    assert first.cost_usd == pytest.approx(0.60) and first.hours == 2
    assert first.on_demand_usd == pytest.approx(2 * ON_DEMAND_USD_PER_HOUR["g5.xlarge"])
    second = attempt_cost(1, 2 * H, 3 * H, "g5.xlarge", lifecycle="on-demand")
    assert second.cost_usd == second.on_demand_usd == pytest.approx(ON_DEMAND_USD_PER_HOUR["g5.xlarge"])
    total = job_cost("j", [first, second])
    assert total.total_usd == pytest.approx(0.60 + 1.006)
    assert total.saving_usd == pytest.approx(3 * 1.006 - (0.60 + 1.006))
    assert total.saving_percent == pytest.approx(100 * total.saving_usd / total.on_demand_usd, abs=0.1)
    assert "us-east-1" in total.notes[0] and "list prices" in total.notes[0]


def test_unknown_on_demand_price_gives_no_comparison_unless_given():
    odd = attempt_cost(0, 0, H, "x9.large", history=[("z", 0, 0.5)])
    assert odd.cost_usd == pytest.approx(0.5) and odd.on_demand_usd is None
    assert job_cost("j", [odd]).saving_usd is None
    given = attempt_cost(0, 0, H, "x9.large", history=[("z", 0, 0.5)], on_demand_price=2.0)
    assert job_cost("j", [given]).saving_percent == 75.0
    empty = attempt_cost(0, 0, H, "t3.micro")
    assert empty.cost_usd == 0 and "no spot price history" in empty.note
