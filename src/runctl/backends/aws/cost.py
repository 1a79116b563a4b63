"""What a job's attempts cost on EC2, and what on-demand would have cost. Pure.

Spot spend is the spot price history integrated over each attempt's run time (the price
in effect at each moment, per hour). The on-demand comparison uses a small table of list
prices (``ON_DEMAND_NOTE`` says which); a type missing from it gives no comparison unless
the caller passes a price.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from runctl.models import Record

ON_DEMAND_NOTE = ("on-demand prices are us-east-1 Linux list prices (USD/hour, 2024) from a built-in table; "
                  "other regions and later price changes differ")

ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "t3.nano": 0.0052, "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416, "t3.large": 0.0832,
    "t3.xlarge": 0.1664, "t3.2xlarge": 0.3328,
    "m5.large": 0.096, "m5.xlarge": 0.192, "m5.2xlarge": 0.384, "m5.4xlarge": 0.768,
    "m6i.large": 0.096, "m6i.xlarge": 0.192, "m6i.2xlarge": 0.384,
    "c5.large": 0.085, "c5.xlarge": 0.17, "c5.2xlarge": 0.34, "c5.4xlarge": 0.68,
    "r5.large": 0.126, "r5.xlarge": 0.252, "r5.2xlarge": 0.504,
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.4xlarge": 1.204, "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.8xlarge": 2.448, "g5.12xlarge": 5.672,
    "g5.48xlarge": 16.288,
    "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776,
    "p3.2xlarge": 3.06, "p3.8xlarge": 12.24, "p3.16xlarge": 24.48,
}


@dataclass(frozen=True)
class AttemptCost(Record):
    attempt: int
    instance_id: str | None
    instance_type: str
    az: str | None
    lifecycle: str  # spot, on-demand
    hours: float
    cost_usd: float
    on_demand_usd: float | None
    note: str = ""


@dataclass(frozen=True)
class JobCost(Record):
    job_id: str
    attempts: tuple[AttemptCost, ...]
    total_usd: float
    on_demand_usd: float | None  # None when an attempt's type has no on-demand price
    saving_usd: float | None
    saving_percent: float | None
    notes: tuple[str, ...] = ()


def spend(history: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """USD for [start, end] (epoch seconds) under (epoch, USD/hour) price changes: each price
    holds until the next; before the first record its price is assumed."""
    points = sorted(history)
    if end <= start or not points:
        return 0.0
    total = 0.0
    for i, (when, price) in enumerate(points):
        until = points[i + 1][0] if i + 1 < len(points) else end
        lo, hi = max(start, when if i else start), min(end, until)
        if hi > lo:
            total += price * (hi - lo) / 3600.0
    return total


def spend_over_azs(records: Iterable[tuple[str, float, float]], start: float, end: float) -> float:
    """The mean over availability zones of ``spend`` ((az, epoch, price) records)."""
    by_az: dict[str, list[tuple[float, float]]] = {}
    for az, when, price in records:
        by_az.setdefault(az, []).append((when, price))
    if not by_az:
        return 0.0
    return sum(spend(h, start, end) for h in by_az.values()) / len(by_az)


def attempt_cost(attempt: int, start: float, end: float, instance_type: str, *, instance_id: str | None = None,
                 az: str | None = None, lifecycle: str = "spot",
                 history: Iterable[tuple[str, float, float]] = (),
                 on_demand_price: float | None = None, note: str = "") -> AttemptCost:
    """One attempt's cost: spot from ``history`` (of ``az`` when known, else averaged over
    zones), on-demand from ``on_demand_price`` or the table."""
    hours = max(0.0, end - start) / 3600.0
    price = on_demand_price if on_demand_price is not None else ON_DEMAND_USD_PER_HOUR.get(instance_type)
    on_demand = None if price is None else price * hours
    if lifecycle == "on-demand":
        cost = on_demand if on_demand is not None else 0.0
        if on_demand is None:
            note = "; ".join(filter(None, [note, f"no on-demand price for {instance_type}"]))
    else:
        records = [r for r in history if not az or r[0] == az] or list(history)
        if not records:
            note = "; ".join(filter(None, [note, "no spot price history"]))
        cost = spend_over_azs(records, start, end)
    return AttemptCost(attempt, instance_id, instance_type, az, lifecycle, round(hours, 4), cost, on_demand, note)


def job_cost(job_id: str, attempts: Iterable[AttemptCost], notes: Iterable[str] = ()) -> JobCost:
    attempts = tuple(attempts)
    total = sum(a.cost_usd for a in attempts)
    comparable = attempts and all(a.on_demand_usd is not None for a in attempts)
    on_demand = sum(a.on_demand_usd or 0.0 for a in attempts) if comparable else None
    saving = None if on_demand is None else on_demand - total
    percent = None if not on_demand or saving is None else round(100.0 * saving / on_demand, 1)
    return JobCost(job_id, attempts, total, on_demand, saving, percent, (ON_DEMAND_NOTE, *notes))
