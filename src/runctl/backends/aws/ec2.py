"""The EC2 adapter for existing instances: describe, list, stop, start, terminate.

``Ec2(client)`` takes a boto3 EC2 client (a test may wrap it) plus the sleep and clock it
waits with. Every botocore error leaves as a one-line ``CloudError`` (``session.translate``).
Stop and start refuse an instance that does not carry the ``runctl:created`` tag: runctl
never touches what it did not launch. Launching is ``provision.Provisioner``; both make
the compute contract's EC2 side (``compute.Ec2Compute``), and waiting and terminating
what runctl launched live over that contract (``runctl.backends.instances``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from runctl.backends.aws import instance_types as types
from runctl.backends.aws.launch import TAG_CREATED, TAG_JOB, has_runctl_tags
from runctl.backends.aws.session import check_instance_id, error_code, translate
from runctl.backends.compute import GONE, LIVE_STATES
from runctl.backends.instances import require_runctls
from runctl.errors import AccessDenied, CloudError, CloudNotFound, UsageError
from runctl.models import InstanceInfo

log = logging.getLogger(__name__)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return str(value or "")


def instance_info(data: dict[str, Any], region: str = "") -> InstanceInfo:
    """An InstanceInfo from one DescribeInstances / RunInstances instance record."""
    return InstanceInfo(
        instance_id=data["InstanceId"],
        instance_type=data.get("InstanceType", ""),
        state=data.get("State", {}).get("Name", "unknown"),
        lifecycle="spot" if data.get("InstanceLifecycle") == "spot" else "on-demand",
        az=data.get("Placement", {}).get("AvailabilityZone", ""),
        launched=_iso(data.get("LaunchTime")),
        public_ip=data.get("PublicIpAddress"),
        private_ip=data.get("PrivateIpAddress"),
        tags={t["Key"]: t.get("Value", "") for t in data.get("Tags", ())},
        region=region,
        image_id=data.get("ImageId", ""),
        subnet_id=data.get("SubnetId"),
    )


class Ec2:
    def __init__(self, client, *, region: str = "", sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.region = region
        self._sleep = sleep
        self._clock = clock

    # -- reading ---------------------------------------------------------------------
    def describe(self, instance_id: str, *, not_found_grace: float = 0.0) -> InstanceInfo:
        """The instance now. ``not_found_grace``: seconds to keep asking while EC2 does not
        list a just-launched instance yet (its API is eventually consistent)."""
        check_instance_id(instance_id)
        give_up = self._clock() + not_found_grace
        while True:
            try:
                with translate(f"describe {instance_id}", instance_id=instance_id, region=self.region,
                               permission="ec2:DescribeInstances"):
                    response = self.client.describe_instances(InstanceIds=[instance_id])
            except CloudNotFound as exc:
                if exc.code != "InvalidInstanceID.NotFound" or self._clock() >= give_up:
                    raise
                self._sleep(1.0)
                continue
            found = [i for r in response.get("Reservations", ()) for i in r.get("Instances", ())]
            if not found:
                raise CloudNotFound(f"instance {instance_id} not found in {self.region or 'this region'}",
                                    operation="DescribeInstances")
            return instance_info(found[0], self.region)

    def list_tagged(self, *, job: str | None = None, states: tuple[str, ...] = LIVE_STATES,
                    spot: bool | None = None) -> list[InstanceInfo]:
        """Instances runctl launched (tag ``runctl:created``), optionally of one job. The
        spot/on-demand filter is applied here: not every EC2 implementation has it."""
        filters = [{"Name": "tag-key", "Values": [TAG_CREATED]}]
        if job is not None:
            filters.append({"Name": f"tag:{TAG_JOB}", "Values": [job]})
        if states:
            filters.append({"Name": "instance-state-name", "Values": list(states)})
        found = []
        with translate("list runctl's instances", region=self.region, permission="ec2:DescribeInstances"):
            for page in self.client.get_paginator("describe_instances").paginate(Filters=filters):
                for reservation in page.get("Reservations", ()):
                    found += [instance_info(i, self.region) for i in reservation.get("Instances", ())]
        found = [i for i in found if has_runctl_tags(i.tags) and (job is None or i.job_id == job)]
        if spot is not None:
            found = [i for i in found if (i.lifecycle == "spot") == spot]
        return sorted(found, key=lambda i: (i.launched, i.instance_id))

    # -- changing --------------------------------------------------------------------
    def _own(self, instance_id: str, verb: str) -> InstanceInfo:
        return require_runctls(self.describe(instance_id), verb)

    def stop(self, instance_id: str) -> InstanceInfo:
        info = self._own(instance_id, "stop")
        if info.state in GONE:
            raise CloudError(f"instance {instance_id} is {info.state}; there is nothing to stop")
        if info.state in ("stopped", "stopping"):
            return info
        if info.lifecycle == "spot":
            raise UsageError(f"instance {instance_id} is a one-time spot instance: it cannot be stopped, only "
                             f"terminated (runctl aws terminate {instance_id})")
        with translate(f"stop {instance_id}", instance_id=instance_id, region=self.region,
                       permission="ec2:StopInstances"):
            self.client.stop_instances(InstanceIds=[instance_id])
        return self.describe(instance_id)

    def start(self, instance_id: str) -> InstanceInfo:
        info = self._own(instance_id, "start")
        if info.state in GONE:
            raise CloudError(f"instance {instance_id} is {info.state} and cannot be started; "
                             "launch a new one with runctl aws create")
        if info.state == "stopping":
            raise CloudError(f"instance {instance_id} is still stopping; wait for it "
                             f"(runctl aws wait {instance_id} --state stopped), then start it")
        if info.state in ("pending", "running"):
            return info
        with translate(f"start {instance_id}", instance_id=instance_id, region=self.region,
                       permission="ec2:StartInstances"):
            self.client.start_instances(InstanceIds=[instance_id])
        return self.describe(instance_id)

    def terminate_ids(self, ids: list[str]) -> None:
        """Cancel the instances' spot requests first (a persistent request would launch a
        replacement, and an open one is left behind), then terminate them."""
        with translate(f"terminate {', '.join(ids)}", region=self.region,
                       permission="ec2:CancelSpotInstanceRequests and ec2:TerminateInstances"):
            found = self.client.describe_spot_instance_requests(
                Filters=[{"Name": "instance-id", "Values": ids}])["SpotInstanceRequests"]
            requests = [r["SpotInstanceRequestId"] for r in found if r.get("State") in ("open", "active")]
            if requests:
                self.client.cancel_spot_instance_requests(SpotInstanceRequestIds=requests)
            self.client.terminate_instances(InstanceIds=ids)

    # -- facts for a launch ----------------------------------------------------------
    def check_instance_types(self, names: list[str] | tuple[str, ...]) -> None:
        """``UsageError`` naming the first type this region does not offer. Skipped (logged)
        when the credentials may not call DescribeInstanceTypes."""
        from botocore.exceptions import ClientError

        for name in names:
            types.check_shape(name)
        try:
            with translate("check the instance types", region=self.region):
                try:
                    self.client.describe_instance_types(InstanceTypes=list(dict.fromkeys(names)))
                except ClientError as exc:  # here for AWS's message, which names the unknown type
                    if error_code(exc) != "InvalidInstanceType":
                        raise
                    message = exc.response.get("Error", {}).get("Message", "")
                    bad = next((n for n in names if n in message), names[0])
                    raise UsageError(f"unknown instance type {bad!r} in {self.region or 'this region'}"
                                     f"{types.suggest(bad)}") from None
        except AccessDenied as exc:
            log.info("cannot check the instance types (%s); launching as asked", exc)

    def spot_price_history(self, instance_type: str, start: float, end: float,
                           az: str | None = None) -> list[tuple[str, float, float]]:
        """(az, epoch, USD/hour) records of Linux spot prices in effect over [start, end]."""
        kwargs: dict[str, Any] = {
            "InstanceTypes": [instance_type], "ProductDescriptions": ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
            "StartTime": datetime.fromtimestamp(start, timezone.utc),
            "EndTime": datetime.fromtimestamp(end, timezone.utc),
        }
        if az:
            kwargs["AvailabilityZone"] = az
        records = []
        with translate(f"read the spot price history of {instance_type}", region=self.region,
                       permission="ec2:DescribeSpotPriceHistory"):
            for page in self.client.get_paginator("describe_spot_price_history").paginate(**kwargs):
                for item in page.get("SpotPriceHistory", ()):
                    stamp = item["Timestamp"]
                    epoch = stamp.timestamp() if isinstance(stamp, datetime) else float(stamp)
                    records.append((item.get("AvailabilityZone", ""), epoch, float(item["SpotPrice"])))
        # The zone is filtered here again: not every EC2 implementation filters by it.
        return [r for r in records if not az or r[0] == az]
