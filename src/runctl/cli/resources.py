"""``runctl resources list|cleanup``: what runctl launched on AWS, and removing it.

Only resources tagged ``runctl:created`` are shown or touched: instances (terminated),
launch templates and instant fleets (deleted).
"""

from __future__ import annotations

import click

from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import aws_session, region_option, resolve_region

all_regions_option = click.option("--all-regions", is_flag=True,
                                  help="Every region enabled for the account (default: one region).")
job_option = click.option("--job", metavar="JOB", help="Only the resources of this job (tag runctl:job).")


def _regions(app, region: str | None, all_regions: bool):
    """(region, AwsSession) pairs to look in."""
    from runctl.backends.aws.session import AwsSession, translate

    home = aws_session(app, region)
    if not all_regions:
        return [(home.region, home)]
    with translate("list the account's regions", region=home.region, permission="ec2:DescribeRegions"):
        names = sorted(r["RegionName"] for r in home.client("ec2").describe_regions()["Regions"])
    return [(name, AwsSession(name, session=home.session, known=names)) for name in names]


def _listed(session, name: str, job: str | None):
    from runctl.backends.aws.resources import list_resources

    return list_resources(session.client("ec2"), name, job=job, autoscaling=session.client("autoscaling"))


def _rows(found) -> list[tuple]:
    return [(r.region, r.kind, r.id, r.state or "-", r.job or "-", r.created, r.detail) for r in found]


COLUMNS = ("region", "kind", "id", "state", "job", "created", "detail")


@click.group("resources")
def resources() -> None:
    """List or remove what runctl launched on AWS (tag runctl:created)."""


@resources.command("list")
@region_option
@all_regions_option
@job_option
@output_option
@pass_app
def list_(app, region, all_regions, job):
    """List runctl's job groups, live instances, launch templates and fleets."""
    found = [r for name, session in _regions(app, region, all_regions) for r in _listed(session, name, job)]

    def text() -> None:
        if not found:
            app.output.note("no runctl resources" + ("" if all_regions else f" in {resolve_region(app, region)}"))
            return
        app.output.table(COLUMNS, _rows(found))

    app.output.report(found, text)


@resources.command("cleanup")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--yes", "-y", is_flag=True, help="Remove without asking (needed where nobody can answer).")
@region_option
@all_regions_option
@job_option
@output_option
@pass_app
def cleanup(app, dry_run, yes, region, all_regions, job):
    """Delete runctl's job groups, terminate its instances, delete its launch templates and fleets.

    Nothing without the runctl:created tag is touched. It lists what it will remove and
    asks first (--yes skips the question); --job limits it to one job's resources and
    --dry-run only lists.
    """
    from runctl.backends.aws.resources import cleanup as remove

    found = [(name, session, _listed(session, name, job)) for name, session in _regions(app, region, all_regions)]
    if dry_run or not yes:
        planned = [r for name, session, listed in found for r in remove(session.client("ec2"), name, listed,
                                                                         dry_run=True)]
        if dry_run:
            removed = planned
        elif planned:
            _confirm(app, planned)
    if not dry_run:
        removed = [r for name, session, listed in found
                   for r in remove(session.client("ec2"), name, listed, autoscaling=session.client("autoscaling"))]

    def text() -> None:
        if not removed:
            app.output.note("nothing to clean up")
            return
        verb = "would remove" if dry_run else "removed"
        for r in removed:
            app.output.line(f"{verb} {r.kind} {r.id} ({r.region}{', job ' + r.job if r.job else ''}) {r.detail}")

    app.output.report({"removed": removed, "dry_run": dry_run}, text)


def _confirm(app, planned) -> None:
    """Show what cleanup will remove and ask; where nobody can answer, say to pass --yes."""
    import sys

    from runctl.errors import UsageError

    for r in planned:
        app.output.note(f"will remove {r.kind} {r.id} ({r.region}{', job ' + r.job if r.job else ''}) {r.detail}")
    if not sys.stdin.isatty():
        raise UsageError(f"resources cleanup would remove the {len(planned)} resource(s) above; "
                         "pass --yes to remove them without being asked")
    if not click.confirm(f"Remove these {len(planned)} resource(s)?", default=False, err=True):
        raise click.exceptions.Abort()
