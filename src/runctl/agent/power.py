"""Shutting this machine down from inside: how an instance of runctl's ends itself.

The instances runctl launches terminate on a shutdown from inside (their launch template or
request says so), so ``Machine.power_off`` is how an agent ends its own instance: after its job ended
and its group was deleted, after it left its group at a spot notice, when it was idle too
long, or when the boot watchdog found no agent. The OS's ``shutdown`` (root, as the agent runs
under systemd) lets systemd stop every service cleanly first. The fake cloud puts its own
``shutdown`` on the agent's PATH, as a machine of its own would have one.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

log = logging.getLogger(__name__)


class Machine:
    """This instance's OS, as far as runctl shuts it down. It acts only on an instance the
    metadata service confirmed (``confirmed``): an agent started by hand on someone's
    computer must never shut that computer down, nor cancel its scheduled shutdowns."""

    def __init__(self, instance_id: str, confirmed: bool) -> None:
        self.instance_id = instance_id
        self.confirmed = confirmed

    def power_off(self, why: str) -> bool:
        """Ask the OS to halt now; whether it accepted. Never raises: the caller goes on exiting."""
        if not self.confirmed:
            log.warning("not shutting this machine down (%s): the metadata service did not confirm it is "
                        "instance %s", why, self.instance_id)
            return False
        command = shutil.which("shutdown")
        if command is None:
            log.error("cannot shut this machine down (%s): no shutdown command on PATH", why)
            return False
        log.info("shutting this machine down: %s", why)
        try:
            done = subprocess.run([command, "-h", "now", f"runctl: {why}"], capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("cannot shut this machine down (%s): %s", why, exc)
            return False
        if done.returncode != 0:
            log.error("shutdown refused (%s): %s", why, done.stderr.decode(errors="replace").strip())
            return False
        return True

    def cancel_fallback_shutdown(self) -> None:
        """Cancel the bootstrap's fallback shutdown (armed in case runctl never installs)."""
        command = shutil.which("shutdown")
        if not self.confirmed or command is None:
            return
        try:
            subprocess.run([command, "-c"], capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot cancel the bootstrap's scheduled shutdown: %s", exc)
