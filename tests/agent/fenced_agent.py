"""An agent process for the fencing tests (tests/agent/test_fenced_agents.py).

    python fenced_agent.py WORK NAME STORE_URL [--fault partition|lost-response] [--wait] [--ttl S]

Runs job "fenced" (WORK/job.py, written by the test) with the real Agent and a store wrapped
in a FaultyStore, its checkpoint folder WORK/NAME/ckpt as if on a machine of its own. Once
the first snapshot is durable, ``--fault`` strikes the lease: ``partition`` makes every
lease.json write fail before reaching the store (the agent can no longer prove its lease),
``lost-response`` makes one renewal land and then fail with 412, as in issue 12;
``taken-at-restore`` has another agent take the lease while this one restores. ``--wait``
waits for the lease (as a replacement instance's agent does) and runs nothing when the job
completed meanwhile. Prints one JSON line: what happened, and when.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

JOB = "fenced"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("name")
    parser.add_argument("store_url")
    parser.add_argument("--fault", choices=["partition", "lost-response", "taken-at-restore"])
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--ttl", type=float, default=6.0)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    from runctl.agent.lease import Lease
    from runctl.agent.status import read_status
    from runctl.agent.supervisor import Agent, AgentOptions
    from runctl.errors import PreconditionFailed, RunctlError
    from runctl.models import JobSpec
    from runctl.store import layout, open_store
    from runctl.testing import FaultyStore

    store = FaultyStore(open_store(args.store_url))
    home = args.work / args.name
    spec = JobSpec(JOB, (sys.executable, str(args.work / "job.py"), str(args.work / "script.jsonl"), str(args.steps)),
                   args.store_url, str(home / "ckpt"), str(args.work), grace_period=30.0, sync_interval=0.3,
                   keep_last_n=1000,  # every snapshot stays, for the test to see the generations
                   env={"AGENT_NAME": args.name})
    events: list[tuple[float, str, str]] = []
    struck = []

    def on_event(event) -> None:
        events.append((time.time(), event.kind, event.message))
        if event.kind == "restore" and args.fault == "taken-at-restore":
            struck.append(time.time())
            other = {"holder": "elsewhere:1:0000", "host": "elsewhere", "pid": 1, "expires": time.time() + 600,
                     "released": False, "generation": 99, "token": "taken"}
            store.inner.write(layout.lease_key(JOB), json.dumps(other).encode())
        if event.kind == "snapshot" and args.fault and not struck:
            struck.append(time.time())
            key = layout.lease_key(JOB)
            if args.fault == "partition":
                store.inject("write", key=key, when="before", times=None)
            else:
                store.inject("write", key=key, when="after", error=PreconditionFailed("412 (injected)"))

    options = AgentOptions(run_dir=home / "run", heartbeat_interval=0.2, quiet_period=0.2, lease_ttl=args.ttl)
    agent = Agent(spec, store, [], options, events=on_event)
    result: dict = {"name": args.name}
    try:
        if args.wait:
            lease = Lease(store, JOB, ttl=args.ttl)
            lease.wait_acquire(120, poll=0.1)
            result.update(acquired=time.time(), generation=lease.generation)
            agent.lease = lease
            status = read_status(store, JOB)
            if status is not None and status.state == "completed":
                lease.release()
                result["outcome"] = "completed while waiting"
                return 0
        result["outcome"] = agent.run().state
        return 0
    except RunctlError as exc:
        result.update(outcome=type(exc).__name__, message=str(exc))
        return exc.exit_code
    finally:
        result.update(events=events, struck=struck[0] if struck else None,
                      lease_failures=sum(1 for c in store.calls if c[1].endswith("lease.json") and c[2] != "ok"))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
