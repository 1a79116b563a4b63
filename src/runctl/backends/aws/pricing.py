"""What an instance type costs per hour now: spot from the EC2 spot price history, on-demand
from the AWS Price List API.

The Price List is a separate, slow-moving service that not every credential (nor every AWS
emulator) can read; where it cannot be read, the built-in table of
``runctl.backends.aws.cost`` stands in and the record says so. Parsing is pure
(``parse_on_demand``, ``current_spot``); ``hourly_prices`` makes the calls.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from runctl.backends.aws.cost import ON_DEMAND_USD_PER_HOUR
from runctl.backends.aws.session import translate
from runctl.errors import CloudError
from runctl.models import Record

log = logging.getLogger(__name__)

#: The Price List API answers in a few regions only; us-east-1 serves every region's prices.
PRICE_LIST_REGION = "us-east-1"
FROM_PRICE_LIST = "AWS Price List"
FROM_TABLE = "runctl's built-in table of us-east-1 list prices of 2024, not the Price List"


@dataclass(frozen=True)
class HourlyPrice(Record):
    instance_type: str
    region: str
    spot_usd: float | None  # the lowest current spot price over the region's zones
    spot_az: str | None
    on_demand_usd: float | None
    on_demand_source: str  # FROM_PRICE_LIST, FROM_TABLE, or "" when unknown

    def for_market(self, spot: bool) -> float | None:
        return self.spot_usd if spot else self.on_demand_usd

    def describe(self) -> str:
        """One line for a person, e.g. 'g5.xlarge in us-east-1: spot $0.4271/h (us-east-1b),
        on-demand $1.0060/h (AWS Price List)'."""
        spot = (f"spot {usd(self.spot_usd)}/h ({self.spot_az})" if self.spot_usd is not None
                else "spot price unknown")
        on_demand = (f"on-demand {usd(self.on_demand_usd)}/h ({self.on_demand_source})"
                     if self.on_demand_usd is not None else "on-demand price unknown")
        return f"{self.instance_type} in {self.region}: {spot}, {on_demand}"


def usd(amount: float) -> str:
    """Dollars with four decimals, more for the tiny prices of small types and emulators."""
    return f"${amount:.4f}" if amount >= 0.001 else f"${amount:.6f}"


def price_list_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    """The GetProducts filters that select one Linux, shared-tenancy, on-demand price."""
    wanted = {"instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux",
              "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in wanted.items()]


def parse_on_demand(price_list: Iterable[str]) -> float | None:
    """The USD per hour of the OnDemand terms in GetProducts' ``PriceList`` (JSON strings);
    the lowest non-zero one when several products match, None when there is none."""
    prices = []
    for item in price_list:
        product = json.loads(item) if isinstance(item, str) else item
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                if dimension.get("unit") not in (None, "Hrs"):
                    continue
                usd = float(dimension.get("pricePerUnit", {}).get("USD", 0) or 0)
                if usd > 0:
                    prices.append(usd)
    return min(prices) if prices else None


def current_spot(records: Iterable[tuple[str, float, float]]) -> tuple[float, str] | None:
    """(USD per hour, zone) of the cheapest zone, each zone at its latest record
    ((zone, epoch, price) records, as ``Ec2.spot_price_history`` returns them)."""
    latest: dict[str, tuple[float, float]] = {}
    for az, when, price in records:
        if az not in latest or when >= latest[az][0]:
            latest[az] = (when, price)
    if not latest:
        return None
    az, (_when, price) = min(latest.items(), key=lambda item: (item[1][1], item[0]))
    return price, az


def on_demand_price(pricing_client, instance_type: str, region: str) -> float | None:
    """The Price List's on-demand price; CloudError when the service cannot be read."""
    action = f"read the Price List for {instance_type}"
    with translate(action, permission="pricing:GetProducts"):
        answer = pricing_client.get_products(ServiceCode="AmazonEC2", MaxResults=10,
                                             Filters=price_list_filters(instance_type, region))
    try:
        return parse_on_demand(answer.get("PriceList", ()))
    except ValueError as exc:
        raise CloudError(f"cannot {action}: {exc}", operation="GetProducts") from exc


def hourly_prices(ec2, pricing_client, instance_types: Sequence[str], region: str, *,
                  clock: Callable[[], float] = time.time) -> list[HourlyPrice]:
    """The price of each type now. ``ec2`` is an ``Ec2`` (its spot price history);
    ``pricing_client`` a boto3 'pricing' client. A spot history that cannot be read leaves
    the spot price unknown; a Price List that cannot be read falls back to the table."""
    now = clock()
    prices = []
    use_table = False
    for instance_type in instance_types:
        try:
            spot = current_spot(ec2.spot_price_history(instance_type, now, now))
        except CloudError as exc:
            log.info("no spot price for %s: %s", instance_type, exc)
            spot = None
        on_demand, source = None, ""
        if not use_table:
            try:
                on_demand, source = on_demand_price(pricing_client, instance_type, region), FROM_PRICE_LIST
            except CloudError as exc:
                log.info("%s; using the built-in table", exc)
                use_table = True  # the same answer for the next type: ask no more
        if on_demand is None:
            on_demand = ON_DEMAND_USD_PER_HOUR.get(instance_type)
            source = FROM_TABLE if on_demand is not None else ""
        prices.append(HourlyPrice(instance_type, region, spot[0] if spot else None, spot[1] if spot else None,
                                  on_demand, source))
    return prices


def pricing_client(session):
    """A Price List client for ``session`` (a boto3 Session): short timeouts and one retry,
    since the price is shown before a launch and must not hold it up."""
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=10)
    return session.client("pricing", region_name=PRICE_LIST_REGION, config=config)
