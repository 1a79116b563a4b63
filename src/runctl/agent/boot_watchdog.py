"""The boot watchdog of a group's instance: no instance runs forever without its agent.

``python -m runctl.agent.boot_watchdog --store URL --job JOB [--region R] [--instance-id ID]``

The bootstrap arms it (a systemd timer, ``boot_timeout_s`` after runctl was installed). When
it fires and this instance's agent has reported (``instances/<id>/agent.json``), it does
nothing. Otherwise the instance counts as a boot failure of the job; at ``max_boot_failures``
in a row (group.json) the job fails and its group is deleted, and in any case this machine
shuts down (its launch template makes that a termination), so the group tries a new one.
"""

from __future__ import annotations

import argparse
import logging
import sys

from runctl.agent import group_record as records
from runctl.errors import RunctlError
from runctl.store import layout

log = logging.getLogger(__name__)


def check_boot(store, job_id: str, instance_id: str, groups, *, machine) -> str:
    """What the watchdog found and did: "started", "counted" or "failed". ``machine``: an
    ``agent.power.Machine``."""
    from runctl.agent.group_member import end_group, settle_status

    if store.exists(layout.instance_agent_key(instance_id)):
        machine.cancel_fallback_shutdown()
        return "started"
    settings = records.read_group(store, job_id) or {}
    limit = int(settings.get("max_boot_failures", 3))
    count = records.add_boot_failure(store, job_id, instance_id)
    timeout = settings.get("boot_timeout_s")
    after = f" within {float(timeout):.0f}s" if timeout else ""
    log.error("the runctl agent did not start on %s%s (boot failure %d of at most %d in a row)",
              instance_id, after, count, limit)
    outcome = "counted"
    if count >= limit:
        message = (f"the runctl agent did not start{after} on {count} instances in a row; see the instance's "
                   "/var/log/cloud-init-output.log and /var/log/runctl-agent.log (e.g. in the EC2 console's "
                   "system log)")
        settle_status(store, job_id, "failed", message)
        end_group(store, job_id, groups, "failed", message, by=f"boot watchdog on {instance_id}",
                  leaving=instance_id)
        outcome = "failed"
    machine.power_off(f"the runctl agent did not start{after}")
    return outcome


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m runctl.agent.boot_watchdog", description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--region")
    parser.add_argument("--instance-id")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        from runctl.agent.power import Machine
        from runctl.agent.identity import discover_identity
        from runctl.backends.aws.job_group import JobGroups
        from runctl.backends.aws.session import AwsSession
        from runctl.store import open_store

        identity = discover_identity(args.instance_id, args.region)
        outcome = check_boot(open_store(args.store), args.job, identity.instance_id,
                             lambda region: JobGroups.for_session(AwsSession(region or identity.region)),
                             machine=Machine(identity.instance_id, identity.confirmed))
        log.info("boot watchdog: %s", outcome)
        return 0
    except RunctlError as exc:
        # The bootstrap's fallback shutdown, still armed, ends this machine later.
        log.error("the boot watchdog failed: %s", exc)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
