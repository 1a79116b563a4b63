"""The price per hour: Price List parsing, current spot, and the call shapes (botocore's
Stubber: moto plays no Price List)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import Stubber

from runctl.backends.aws.ec2 import Ec2
from runctl.backends.aws.pricing import (
    FROM_PRICE_LIST,
    FROM_TABLE,
    current_spot,
    hourly_prices,
    parse_on_demand,
    price_list_filters,
)

NOW = 1_780_000_000.0


def product(usd: str, unit: str = "Hrs") -> str:
    return json.dumps({"product": {"attributes": {"instanceType": "g5.xlarge"}}, "terms": {"OnDemand": {
        "X.JRTCKXETXF": {"priceDimensions": {"X.JRTCKXETXF.6YS6EN2CT7": {
            "unit": unit, "pricePerUnit": {"USD": usd}}}}}}})


def test_parse_on_demand_takes_the_hourly_usd_of_the_on_demand_terms():
    assert parse_on_demand([product("1.0060000000")]) == pytest.approx(1.006)
    assert parse_on_demand([product("0.0000000000"), product("1.2120000000")]) == pytest.approx(1.212)
    assert parse_on_demand([product("5.0", unit="Quantity")]) is None
    assert parse_on_demand([]) is None


def test_current_spot_is_the_cheapest_zone_at_its_latest_price():
    records = [("us-east-1a", 10, 0.50), ("us-east-1a", 20, 0.30), ("us-east-1b", 15, 0.40), ("us-east-1c", 5, 0.35)]
    assert current_spot(records) == (0.30, "us-east-1a")
    assert current_spot([]) is None


def clients():
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s",
                       endpoint_url="https://ec2.us-east-1.amazonaws.com")
    pricing = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s",
                           endpoint_url="https://api.pricing.us-east-1.amazonaws.com")
    return ec2, pricing


def test_hourly_prices_ask_the_spot_history_and_the_price_list_for_each_type():
    ec2, pricing = clients()
    at = datetime.fromtimestamp(NOW, timezone.utc)
    with Stubber(ec2) as ec2_stub, Stubber(pricing) as pricing_stub:
        ec2_stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [
            {"AvailabilityZone": "us-east-1b", "InstanceType": "g5.xlarge", "SpotPrice": "0.4271",
             "Timestamp": at, "ProductDescription": "Linux/UNIX"},
            {"AvailabilityZone": "us-east-1a", "InstanceType": "g5.xlarge", "SpotPrice": "0.4410",
             "Timestamp": at, "ProductDescription": "Linux/UNIX"}]},
            {"InstanceTypes": ["g5.xlarge"], "ProductDescriptions": ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
             "StartTime": at, "EndTime": at})
        pricing_stub.add_response("get_products", {"PriceList": [product("1.0060000000")], "FormatVersion": "aws_v1"},
                                  {"ServiceCode": "AmazonEC2", "MaxResults": 10,
                                   "Filters": price_list_filters("g5.xlarge", "eu-west-1")})
        [price] = hourly_prices(Ec2(ec2, region="eu-west-1"), pricing, ["g5.xlarge"], "eu-west-1", clock=lambda: NOW)
        ec2_stub.assert_no_pending_responses()
        pricing_stub.assert_no_pending_responses()
    assert (price.spot_usd, price.spot_az, price.on_demand_usd, price.on_demand_source) == (
        0.4271, "us-east-1b", pytest.approx(1.006), FROM_PRICE_LIST)
    assert price.describe() == ("g5.xlarge in eu-west-1: spot $0.4271/h (us-east-1b), "
                                "on-demand $1.0060/h (AWS Price List)")
    assert {"Type": "TERM_MATCH", "Field": "regionCode", "Value": "eu-west-1"} in price_list_filters("g5.xlarge",
                                                                                                       "eu-west-1")


def test_a_price_list_that_cannot_be_read_falls_back_to_the_table_once_and_says_so():
    ec2, pricing = clients()
    with Stubber(ec2) as ec2_stub, Stubber(pricing) as pricing_stub:
        for _ in range(2):
            ec2_stub.add_client_error("describe_spot_price_history", "UnauthorizedOperation", http_status_code=403)
        pricing_stub.add_client_error("get_products", "AccessDeniedException", http_status_code=400)
        prices = hourly_prices(Ec2(ec2, region="us-east-1"), pricing, ["t3.micro", "x9.huge"], "us-east-1",
                               clock=lambda: NOW)
        pricing_stub.assert_no_pending_responses()  # asked once: the second type goes straight to the table
    assert [(p.spot_usd, p.on_demand_usd, p.on_demand_source) for p in prices] == [
        (None, 0.0104, FROM_TABLE), (None, None, "")]
    assert prices[1].describe() == "x9.huge in us-east-1: spot price unknown, on-demand price unknown"
