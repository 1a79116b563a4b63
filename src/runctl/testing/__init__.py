"""Test doubles shipped with runctl, for its own tests and for users rehearsing a job.

- ``runctl.testing.imds``: a local emulator of the EC2 instance metadata service (IMDSv2
  tokens, spot instance-action, rebalance recommendation, fault injection), usable from
  Python (``ImdsEmulator``), as a pytest fixture (``imds``) and from the command line
  (``python -m runctl.testing.imds --notice-in 5``).
- ``runctl.testing.faulty_store``: ``FaultyStore`` wraps any store and makes chosen calls
  fail before reaching it, or land and then fail as if the response were lost.
- ``runctl.testing.memory_store``: ``MemoryStore``, the Store protocol in memory (as
  ``LocalStore`` behaves, in this process only), for tests that need a store but no disk.
- ``runctl.testing.fake_groups``: ``FakeGroups``, a job's Auto Scaling groups in memory,
  for testing the job lifecycle without any server.
- ``runctl.testing.fake_compute``: ``FakeCompute``, the compute contract (launch, describe,
  terminate, list tagged) in memory, with capacity shortages and scripted instance states.
- ``runctl.testing.s3_proxy``: a fault-injecting HTTP proxy to put in front of S3 or moto
  (``S3FaultProxy``): connection resets before and after forwarding, truncated answers and
  stalls, scripted or drawn by a seeded ``FaultPlan``.

Submodules are imported on first use so that ``python -m runctl.testing.imds`` runs cleanly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FakeCompute", "FakeGroups", "Fault", "FaultPlan", "FaultyStore", "ImdsEmulator", "MemoryStore", "Rule",
           "S3FaultProxy"]


def __getattr__(name: str) -> Any:
    if name == "ImdsEmulator":
        from runctl.testing.imds import ImdsEmulator

        return ImdsEmulator
    if name == "FaultyStore":
        from runctl.testing.faulty_store import FaultyStore

        return FaultyStore
    if name == "MemoryStore":
        from runctl.testing.memory_store import MemoryStore

        return MemoryStore
    if name == "FakeCompute":
        from runctl.testing.fake_compute import FakeCompute

        return FakeCompute
    if name == "FakeGroups":
        from runctl.testing.fake_groups import FakeGroups

        return FakeGroups
    if name in ("Fault", "FaultPlan", "Rule", "S3FaultProxy"):
        from runctl.testing import s3_proxy

        return getattr(s3_proxy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
