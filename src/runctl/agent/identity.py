"""Which instance the agent runs on: its id, region, type, AZ and private address, given or asked of the EC2
instance metadata service (IMDSv2; ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` moves it)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from runctl.errors import UsageError

log = logging.getLogger(__name__)

_IMDS_PATHS = {
    "instance_id": "/latest/meta-data/instance-id",
    "instance_type": "/latest/meta-data/instance-type",
    "az": "/latest/meta-data/placement/availability-zone",
    "region": "/latest/meta-data/placement/region",
    "address": "/latest/meta-data/local-ipv4",
}


@dataclass(frozen=True)
class InstanceIdentity:
    instance_id: str
    region: str | None = None
    instance_type: str | None = None
    az: str | None = None
    address: str | None = None  # the private IPv4 address, at which the job's other machines reach this one
    #: The metadata service said this is the instance: only then may the agent shut the
    #: machine down (an agent started by hand with --instance-id on a laptop never does).
    confirmed: bool = False

    def attempt_labels(self) -> dict[str, str]:
        """Attempt fields for every attempt run here."""
        labels = {"instance_id": self.instance_id, "instance_type": self.instance_type, "az": self.az}
        return {k: v for k, v in labels.items() if v}


def discover_identity(instance_id: str | None = None, region: str | None = None, *,
                      endpoint: str | None = None, ask_imds: bool | None = None,
                      attempts: int = 10, delay: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> InstanceIdentity:
    """This instance's id, region, type and AZ: what is given, the rest from IMDS.

    IMDS is asked when ``ask_imds``, or (None) when no id is given, an endpoint is set
    (``AWS_EC2_METADATA_SERVICE_ENDPOINT``) or the firmware says EC2. Without an id and
    without an answer from IMDS: UsageError.
    """
    from runctl.interruptions.ec2 import ENDPOINT_ENV, ImdsClient, MetadataError, running_on_ec2

    if ask_imds is None:
        ask_imds = instance_id is None or bool(endpoint or os.environ.get(ENDPOINT_ENV)) or running_on_ec2()
    found: dict[str, str | None] = {"instance_id": None, "region": region, "instance_type": None, "az": None,
                                    "address": None}
    if ask_imds:
        client = ImdsClient(endpoint, timeout=2.0, token_ttl=300)
        for name, path in _IMDS_PATHS.items():
            if found[name]:
                continue
            # At boot IMDS may answer late; a given id is only confirmed, once.
            tries = attempts if name == "instance_id" and instance_id is None else 1
            for attempt in range(tries):
                try:
                    status, body = client.get(path)
                except MetadataError as exc:
                    status, body = 0, str(exc).encode()
                if status == 200 and body.strip():
                    found[name] = body.decode("ascii", "replace").strip()
                    break
                log.debug("IMDS %s: HTTP %s", path, status)
                if attempt + 1 < tries:
                    sleep(delay)
    answered = found["instance_id"]
    if not (instance_id or answered):
        raise UsageError("cannot find this instance's id: the EC2 metadata service does not answer; "
                         "give --instance-id")
    return InstanceIdentity(instance_id or answered, found["region"], found["instance_type"], found["az"],
                            found["address"], confirmed=answered is not None and answered == (instance_id or answered))
