"""Launching one instance, falling back across instance types and subnets.

Spot: one launch template (tagged, made for this launch, deleted after it), then one
CreateFleet ``Type=instant`` per instance type in the order of preference, each across
every subnet given (price-capacity-optimized picks the pool within a type). A fleet that
reports only capacity-class errors for its pools (``NoCapacity`` codes) moves on
to the next type; any other error stops. One fleet per type rather than one for all types:
a single fleet would pick the cheapest pool and might skip the type asked for first.
When the credentials may not create fleets or launch templates, spot falls back to
RunInstances with spot market options.

On-demand: RunInstances per type x subnet, moving on after a capacity error.

``Provisioner(client)`` takes the EC2 client as given: a test wraps it to answer one
instance type with a capacity error, as AWS would on a shortage (moto never runs short).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator

from runctl.backends.aws.ec2 import Ec2, instance_info
from runctl.backends.aws.launch import (
    LaunchSpec,
    fleet_request,
    launch_request,
    launch_template_request,
    utc_now_iso,
)
from runctl.backends.aws.session import translate
from runctl.backends.compute import CAPACITY, Skipped
from runctl.errors import AccessDenied, CloudConflict, CloudError, NoCapacity
from runctl.errors.aws import error_class
from runctl.models import InstanceInfo

log = logging.getLogger(__name__)


class Provisioner:
    def __init__(self, client, *, region: str = "", sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.region = region
        self.ec2 = Ec2(client, region=region, sleep=sleep, clock=clock)
        self.skipped: list[Skipped] = []  # the pools tried and refused by the last create

    def create_instance(self, spec: LaunchSpec) -> InstanceInfo:
        """Launch one instance of the first type (and subnet) that has capacity."""
        if not spec.created:
            spec = dataclasses.replace(spec, created=utc_now_iso())
        self.skipped = []
        if spec.spot:
            try:
                return self._create_with_fleets(spec)
            except _FleetNotAllowed as exc:
                log.warning("cannot use CreateFleet (%s); launching spot with RunInstances", exc)
                self.skipped = []
        return self._create_with_run_instances(spec)

    # -- CreateFleet -----------------------------------------------------------------
    def _create_with_fleets(self, spec: LaunchSpec) -> InstanceInfo:
        with self._launch_template(spec) as (template_id, version):
            for instance_type in spec.instance_types:
                request = fleet_request(spec, template_id, [instance_type], spec.subnet_ids, version)
                with translate(f"launch a spot {instance_type}", region=self.region, permission="ec2:CreateFleet"):
                    response = self.client.create_fleet(**request)
                ids = [i for group in response.get("Instances", ()) for i in group.get("InstanceIds", ())]
                errors = [_pool_error(e, instance_type) for e in response.get("Errors", ())]
                if ids:
                    if errors:
                        log.info("fleet %s: %s", response.get("FleetId"), "; ".join(map(str, errors)))
                    return self.ec2.describe(ids[0], not_found_grace=30.0)
                self._note_refusals(errors, instance_type)
        raise self._no_capacity(spec)

    @contextlib.contextmanager
    def _launch_template(self, spec: LaunchSpec) -> Iterator[tuple[str, str]]:
        request = launch_template_request(spec)
        name = request["LaunchTemplateName"]
        action, permission = "create a launch template", "ec2:CreateLaunchTemplate"
        try:
            with translate(action, region=self.region, permission=permission):
                made = self.client.create_launch_template(**request)["LaunchTemplate"]
        except AccessDenied as exc:
            raise _FleetNotAllowed(exc.code) from exc
        except CloudConflict as exc:
            if exc.code != "InvalidLaunchTemplateName.AlreadyExistsException":
                raise
            # The same launch, retried: its template is there already.
            with translate(action, region=self.region, permission=permission):
                made = self.client.describe_launch_templates(
                    Filters=[{"Name": "launch-template-name", "Values": [name]}])["LaunchTemplates"][0]
        template_id = made["LaunchTemplateId"]
        try:
            yield template_id, str(made.get("LatestVersionNumber", 1))
        except AccessDenied as exc:
            raise _FleetNotAllowed(str(exc)) from exc
        finally:
            # An instant fleet's instances do not need their template once launched.
            try:
                with translate(f"delete launch template {template_id}", region=self.region):
                    self.client.delete_launch_template(LaunchTemplateId=template_id)
            except CloudError as exc:
                log.warning("%s; runctl resources cleanup removes it later", exc)

    # -- RunInstances ----------------------------------------------------------------
    def _create_with_run_instances(self, spec: LaunchSpec) -> InstanceInfo:
        market = "spot" if spec.spot else "on-demand"
        for instance_type in spec.instance_types:
            for subnet in spec.subnet_ids or (None,):
                request = launch_request(spec, instance_type, subnet)
                try:
                    with translate(f"launch an {market} {instance_type}", region=self.region,
                                   permission="ec2:RunInstances"):
                        response = self.client.run_instances(**request)
                except NoCapacity as exc:
                    self._note_refusals([Skipped(instance_type, CAPACITY, subnet, exc.code, str(exc))], instance_type)
                    continue
                return instance_info(response["Instances"][0], self.region)
        raise self._no_capacity(spec)

    # -- outcomes --------------------------------------------------------------------
    def _note_refusals(self, errors: list[Skipped], instance_type: str) -> None:
        if not errors:
            errors = [Skipped(instance_type, CAPACITY, None, "NoInstance",
                              "the fleet launched nothing and said why not")]
        fatal = [e for e in errors if error_class(e.code) is not NoCapacity]
        if fatal:
            first = fatal[0]
            raise error_class(first.code)(f"cannot launch {first.instance_type}: {first.code}: {first.message}",
                                          code=first.code, operation="CreateFleet")
        self.skipped.extend(errors)
        log.info("no capacity: %s; trying the next instance type", "; ".join(map(str, errors)))

    def _no_capacity(self, spec: LaunchSpec) -> NoCapacity:
        market = "spot" if spec.spot else "on-demand"
        tried = "; ".join(map(str, self.skipped)) or ", ".join(spec.instance_types)
        hint = "add --fallback-types or subnets in other zones" + (", or use --on-demand" if spec.spot else "")
        # NoCapacity, as the compute contract says (a CloudError: exit 3 as before).
        return NoCapacity(f"no {market} capacity for {', '.join(spec.instance_types)} ({tried}); {hint}")


class _FleetNotAllowed(Exception):
    """The credentials may not use CreateFleet or launch templates."""


def _pool_error(error: dict, default_type: str) -> Skipped:
    """One pool's error in a CreateFleet answer (a capacity one, unless ``_note_refusals`` finds otherwise)."""
    overrides = error.get("LaunchTemplateAndOverrides", {}).get("Overrides", {})
    return Skipped(overrides.get("InstanceType", default_type), CAPACITY, overrides.get("SubnetId"),
                   str(error.get("ErrorCode", "")), str(error.get("ErrorMessage", "")))
