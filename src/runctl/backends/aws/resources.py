"""Everything runctl launched in a region, and its removal: job groups (Auto Scaling),
instances, launch templates, fleets.

Only resources tagged ``runctl:created`` are listed or removed, checked again here even
after a tag filter. A fleet is deleted only when every instance it lists is runctl's
(deleting an instant fleet terminates its instances). Instances are listed and terminated
through the compute contract (``compute``, default the region's ``Ec2Compute``); job
groups, fleets and launch templates are EC2's and Auto Scaling's own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from runctl.backends.aws.compute import Ec2Compute
from runctl.backends.aws.launch import TAG_CREATED, TAG_JOB, has_runctl_tags
from runctl.backends.aws.session import translate
from runctl.models import Record

log = logging.getLogger(__name__)

FLEET_GONE = ("deleted", "deleted_running", "deleted_terminating", "failed")


@dataclass(frozen=True)
class Resource(Record):
    kind: str  # "auto-scaling-group", "instance", "launch-template", "fleet"
    id: str
    region: str
    state: str = ""
    created: str = ""
    job: str = ""
    detail: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    members: tuple[str, ...] = ()  # a fleet's instances


def _tags(items) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in items or ()}


def list_resources(client, region: str, *, job: str | None = None, autoscaling=None, compute=None) -> list[Resource]:
    """runctl's job groups (with an ``autoscaling`` client), live instances, launch templates
    and fleets in ``region``."""
    compute = compute or Ec2Compute(client, region=region)
    found: list[Resource] = []
    if autoscaling is not None:
        from runctl.backends.aws.job_group import JobGroups

        for group in JobGroups(autoscaling, client, region=region).list_tagged():
            tags = group["tags"]
            if job is None or tags.get(TAG_JOB) == job:
                found.append(Resource("auto-scaling-group", group["name"], region, "", tags.get(TAG_CREATED, ""),
                                      tags.get(TAG_JOB, ""), f"instances: {', '.join(group['instances']) or 'none'}",
                                      tags, tuple(group["instances"])))
    for info in compute.list_tagged(job=job):
        found.append(Resource("instance", info.instance_id, region, info.state, info.tags.get(TAG_CREATED, ""),
                              info.job_id, f"{info.instance_type} {info.lifecycle} {info.az}", info.tags))
    live = {r.id for r in found}
    with translate("list runctl's launch templates", region=region, permission="ec2:DescribeLaunchTemplates"):
        pages = client.get_paginator("describe_launch_templates").paginate(
            Filters=[{"Name": "tag-key", "Values": [TAG_CREATED]}])
        for page in pages:
            for lt in page.get("LaunchTemplates", ()):
                tags = _tags(lt.get("Tags"))
                if has_runctl_tags(tags) and (job is None or tags.get(TAG_JOB) == job):
                    found.append(Resource("launch-template", lt["LaunchTemplateId"], region, "",
                                          tags.get(TAG_CREATED, ""), tags.get(TAG_JOB, ""),
                                          lt.get("LaunchTemplateName", ""), tags))
    with translate("list runctl's fleets", region=region, permission="ec2:DescribeFleets"):
        for page in client.get_paginator("describe_fleets").paginate():
            for fleet in page.get("Fleets", ()):
                tags = _tags(fleet.get("Tags"))
                if not has_runctl_tags(tags) or fleet.get("FleetState") in FLEET_GONE:
                    continue
                if job is not None and tags.get(TAG_JOB) != job:
                    continue
                ids = [i for group in fleet.get("Instances", ()) for i in group.get("InstanceIds", ())]
                if fleet.get("Type") == "instant" and not live & set(ids):
                    continue  # an instant fleet launches nothing more: only its instances count
                found.append(Resource("fleet", fleet["FleetId"], region, fleet.get("FleetState", ""),
                                      tags.get(TAG_CREATED, ""), tags.get(TAG_JOB, ""),
                                      f"{fleet.get('Type', '')} fleet of {', '.join(ids) or 'no instance'}",
                                      tags, tuple(ids)))
    return found


def cleanup(client, region: str, resources: list[Resource], *, dry_run: bool = False,
            autoscaling=None, compute=None) -> list[Resource]:
    """Remove ``resources`` (from ``list_resources``); returns what was (would be) removed.

    Job groups go first (so that nothing launches a replacement; deleting one terminates its
    instances), then fleets (deleting an instant fleet terminates its instances, so only
    fleets whose instances are all runctl's), then the instances, then the launch templates.
    A fleet that cannot be deleted is logged and kept; the rest goes on."""
    compute = compute or Ec2Compute(client, region=region)
    ours = [r for r in resources if r.region == region and has_runctl_tags(r.tags)]
    removed: list[Resource] = []
    for group in (r for r in ours if r.kind == "auto-scaling-group"):
        if not dry_run:
            from runctl.backends.aws.autoscaling import delete_group_request

            with translate(f"delete Auto Scaling group {group.id}", region=region,
                           permission="autoscaling:DeleteAutoScalingGroup"):
                autoscaling.delete_auto_scaling_group(**delete_group_request(group.id))
        removed.append(group)
    fleets = [r for r in ours if r.kind == "fleet"]
    if fleets:
        runctl_ids = {i.instance_id for i in compute.list_tagged(states=())}
        for fleet in fleets:
            strangers = [i for i in fleet.members if i not in runctl_ids]
            if strangers:
                log.warning("keeping fleet %s: it lists instances runctl did not tag (%s)", fleet.id,
                            ", ".join(strangers))
            elif dry_run or _delete_fleet(client, region, fleet.id):
                removed.append(fleet)
    instances = [r for r in ours if r.kind == "instance"]
    if instances:
        if not dry_run:
            compute.terminate([r.id for r in instances])  # their spot requests too
        removed += instances
    for template in (r for r in ours if r.kind == "launch-template"):
        if not dry_run:
            with translate(f"delete launch template {template.id}", region=region,
                           permission="ec2:DeleteLaunchTemplate"):
                client.delete_launch_template(LaunchTemplateId=template.id)
        removed.append(template)
    return removed


def _delete_fleet(client, region: str, fleet_id: str) -> bool:
    from runctl.errors import AccessDenied, CloudError, CredentialsError

    try:
        with translate(f"delete fleet {fleet_id}", region=region, permission="ec2:DeleteFleets"):
            response = client.delete_fleets(FleetIds=[fleet_id], TerminateInstances=True)
    except (AccessDenied, CredentialsError):
        raise
    except CloudError as exc:
        log.warning("keeping fleet %s: %s", fleet_id, exc)
        return False
    failed = response.get("UnsuccessfulFleetDeletions", ())
    if failed:
        error = failed[0].get("Error", {})
        log.warning("keeping fleet %s: %s: %s", fleet_id, error.get("Code"), error.get("Message"))
        return False
    return True
