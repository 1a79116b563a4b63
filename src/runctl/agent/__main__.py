"""``python -m runctl.agent REQUEST.json``: a detached agent (``runctl run --detach``)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from runctl.agent.supervisor import Agent, AgentOptions
from runctl.errors import RunctlError
from runctl.interruptions import sources_for
from runctl.models import JobSpec
from runctl.store import open_store


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    request = json.loads(Path(argv[0]).read_text())
    spec = JobSpec.from_dict(request["spec"])
    offsets = request.get("rehearse_offsets") or []
    sources, rehearsal = sources_for(offsets, request.get("spot_notices"))
    options = AgentOptions(run_dir=Path(argv[0]).parent, wipe_between_attempts=rehearsal is not None,
                           rebalance_is_interruption=bool(request.get("rebalance_is_interruption")))
    agent = Agent(spec, open_store(spec.store_url), sources, options,
                  events=lambda event: logging.getLogger("runctl.agent").info(event.message))
    try:
        status = agent.run()
    except RunctlError as exc:  # e.g. an unsaved final snapshot or LeaseLost: one line, its exit code
        logging.getLogger("runctl.agent").error("%s", exc)
        return exc.exit_code
    return {"completed": 0, "stopped": 130}.get(status.state, 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
