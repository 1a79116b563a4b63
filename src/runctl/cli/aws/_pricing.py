"""The price per hour of what is about to be launched, shown before it is, and the
``--max-price-per-hour`` limit that refuses more."""

from __future__ import annotations

import click

from runctl.errors import UsageError

max_price_option = click.option(
    "--max-price-per-hour", "max_price_per_hour", type=click.FloatRange(min=0, min_open=True), metavar="USD",
    help="Refuse instance types that cost more per hour (spot: also the spot bid).")


def affordable_types(app, session, instance_types: tuple[str, ...], *, spot: bool,
                     max_price: float | None) -> tuple[str, ...]:
    """Show each type's spot and on-demand price per hour; return the types within
    ``max_price`` (all of them without one), or raise UsageError when none is."""
    from runctl.backends.aws.ec2 import Ec2
    from runctl.backends.aws.pricing import hourly_prices, pricing_client, usd

    ec2 = Ec2(session.client("ec2"), region=session.region)
    prices = hourly_prices(ec2, pricing_client(session.session), instance_types, session.region)
    market = "spot" if spot else "on-demand"
    kept, refused = [], []
    for price in prices:
        app.output.note(f"price: {price.describe()}")
        # A spot price never exceeds the on-demand one (runctl's bid is capped there).
        cost = price.for_market(spot) if price.for_market(spot) is not None else price.on_demand_usd
        if max_price is None:
            kept.append(price.instance_type)
        elif cost is None:
            refused.append(f"{price.instance_type} (price unknown)")
        elif cost > max_price:
            refused.append(f"{price.instance_type} ({usd(cost)}/h {market})")
        else:
            kept.append(price.instance_type)
    if refused and kept:
        app.output.note(f"skipping {', '.join(refused)}: more than --max-price-per-hour {max_price:g}")
    if not kept:
        raise UsageError(f"every instance type asked for costs more than --max-price-per-hour {max_price:g}: "
                         f"{', '.join(refused)}; choose a cheaper type or raise the limit")
    return tuple(kept)
