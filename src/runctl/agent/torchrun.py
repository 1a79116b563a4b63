"""Jobs of several processes on one machine: the script started under torchrun.

``--nproc-per-node N`` (JobSpec ``nproc_per_node``) runs ``python train.py ARGS`` as
``python -c LAUNCHER --standalone --nnodes 1 --nproc-per-node N ... train.py ARGS``, where
LAUNCHER is torchrun (``torch.distributed.run``) with three changes for a supervised job:

- the job's stop signal (SIGTERM, or the one ``--stop-signal`` names) is forwarded to the
  workers and ends torchrun with exit code 128 + the signal (143), as it ends them, instead
  of a traceback and exit code 1: an attempt stopped by an interruption reads the same with
  one process or eight;
- torchrun waits for its workers 5 s longer than the job's grace period before it kills
  them (``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``, else 30 s), so runctl's grace is the one that
  counts; the agent's SIGKILL after the grace reaches every worker anyway;
- no log folder per run in /tmp (``PET_LOG_DIR`` = /dev/null, where torch (2.3 and later)
  supports it): the workers' output stays on the inherited pipes, which the agent logs.

The workers inherit torchrun's environment (every ``RUNCTL_*`` variable) and its output.
torchrun starts each worker in a session of its own; the agent signals every process of
its tree by pid as well as the group (``runctl.agent.process``), so each worker gets the
stop signal straight from the agent, and torchrun forwards it too.

Which number "auto" means is decided where the job runs: one process per NVIDIA GPU the
machine shows, else one.

``multinode_torchrun_argv`` is the same launcher for one machine of several, meeting the
others at a c10d rendezvous (``--nodes``: ``runctl.agent.multinode``).
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from runctl.config import nproc_text
from runctl.errors import UsageError

AUTO = "auto"
_PYTHON = re.compile(r"python[0-9.]*")
# Run as ``python -c LAUNCHER ARGS``: sys.argv[1:] are torchrun's own arguments, which its parser
# reads. {timeout} (seconds, an integer) and {signals} (names, comma-separated) are filled in.
_LAUNCHER = (
    "import os,sys\n"
    "os.environ.setdefault('TORCH_ELASTIC_SHUTDOWN_TIMEOUT','{timeout}')\n"
    "os.environ.setdefault('PET_SIGNALS_TO_HANDLE','{signals}')\n"
    "os.environ.setdefault('TORCHELASTIC_SIGNALS_TO_HANDLE','{signals}')\n"
    "try:\n"
    " from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs\n"
    " os.environ.setdefault('PET_LOG_DIR',os.devnull)\n"
    "except ImportError:pass\n"
    "from torch.distributed.run import main\n"
    "from torch.distributed.elastic.multiprocessing import SignalException\n"
    "try:main()\n"
    "except SignalException as e:sys.exit(128+int(e.sigval))\n"
)
# The signals torchrun handles by default: it forwards them to its workers and exits.
_TORCHRUN_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
# Looks for torch without importing it (an import takes seconds): ``find_spec`` of a top-level
# package only reads the path.
_HAS_TORCH = "import importlib.util,sys;sys.exit(importlib.util.find_spec('torch') is None)"


def parse_nproc(value: str | int) -> str:
    """``--nproc-per-node`` as stored in the spec: "auto" or a positive count, as text.
    UsageError naming the option otherwise."""
    try:
        return nproc_text(value)
    except ValueError:
        raise UsageError(f"--nproc-per-node {value!r} is neither a number of processes (1, 2, 8 ...) nor auto "
                         "(one per GPU, else one)") from None


def count_gpus(root: Path = Path("/proc/driver/nvidia/gpus")) -> int:
    """NVIDIA GPUs the driver shows (one folder each), without importing torch or running
    nvidia-smi; 0 on a machine without the driver."""
    try:
        return sum(1 for entry in root.iterdir() if entry.is_dir())
    except OSError:
        return 0


def resolve_nproc(value: str, *, gpus: Callable[[], int] = count_gpus) -> int:
    """The number of processes ``value`` (``parse_nproc``'s) means on this machine."""
    if value == AUTO:
        return max(1, gpus())
    return int(value)


def is_python(program: str) -> bool:
    return bool(_PYTHON.fullmatch(Path(program).name))


def split_python(command: Sequence[str]) -> tuple[str, list[str]]:
    """The interpreter and what it runs (``train.py ARGS`` or ``-m module ARGS``) of a job's
    command; UsageError when the command is not a Python script torchrun can start."""
    if not command or not is_python(command[0]):
        shown = command[0] if command else "nothing"
        raise UsageError(f"--nproc-per-node starts a Python script under torchrun, but the job runs {shown}; "
                         "give it a .py script, or start torchrun yourself: runctl run torchrun -- --standalone "
                         "--nproc-per-node 2 train.py")
    rest = list(command[1:])
    if not rest or (rest[0].startswith("-") and rest[0] != "-m") or (rest[0] == "-m" and len(rest) < 2):
        raise UsageError(f"--nproc-per-node needs the script first after the interpreter (train.py ARGS, or -m "
                         f"MODULE ARGS), got: {' '.join(command)}")
    return command[0], rest


def _launcher(grace_period: float, stop_signal: str) -> str:
    """The launcher's code: torchrun forwards ``stop_signal`` to its workers, also one it
    would not handle by itself (SIGUSR1 would kill it and orphan them)."""
    signals = ",".join(dict.fromkeys((*_TORCHRUN_SIGNALS, stop_signal)))
    return _LAUNCHER.format(timeout=max(1, math.ceil(grace_period)) + 5, signals=signals)


def torchrun_argv(command: Sequence[str], nproc: int, *, grace_period: float,
                  stop_signal: str = "SIGTERM") -> list[str]:
    """``command`` (a Python script and its arguments) under torchrun with ``nproc``
    processes on this machine alone. Pure."""
    python, rest = split_python(command)
    return [python, "-c", _launcher(grace_period, stop_signal), "--standalone", "--nnodes", "1",
            "--nproc-per-node", str(nproc), *rest]


def multinode_torchrun_argv(command: Sequence[str], nproc: int, *, nnodes: int, endpoint: str, job_id: str,
                            epoch: int, is_host: bool, grace_period: float, stop_signal: str = "SIGTERM") -> list[str]:
    """``command`` under torchrun as one of ``nnodes`` machines of a job, ``nproc``
    processes on this one, through the same launcher as ``torchrun_argv``. Pure.

    The machines meet at torchrun's c10d rendezvous on ``endpoint`` (HOST:PORT, the agreed
    host's: ``runctl.agent.rendezvous``), whose TCP store the host's torchrun serves:
    ``is_host`` says so explicitly, as torch would otherwise guess it from the host name
    (and two machines sharing an address, as in tests on loopback, would both claim it).
    c10d assigns the node ranks. The rendezvous id is the job's and the epoch's, so a
    torchrun left over from an earlier epoch never joins a new one. ``--max-restarts 0``:
    a lost worker ends torchrun, and runctl decides whether the job restarts.

    Each agent of a job of several machines runs it once the job's N machines are live
    (``runctl.agent.multinode.Node.launch``)."""
    python, rest = split_python(command)
    return [python, "-c", _launcher(grace_period, stop_signal), "--nnodes", str(nnodes), "--nproc-per-node", str(nproc),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", f"{job_id}-{epoch}",
            "--rdzv-conf", f"is_host={str(is_host).lower()}", "--max-restarts", "0", *rest]


def check_torch(python: str, *, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
    """UsageError unless ``python`` can import torch (which holds torchrun)."""
    try:
        found = run([python, "-c", _HAS_TORCH], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"--nproc-per-node: cannot run {python} to look for torch ({exc})") from exc
    if not found:
        raise UsageError(f"--nproc-per-node runs the script under torchrun, but torch is not installed for {python}; "
                         "install it there (pip install torch), or leave --nproc-per-node out")


def launch_command(command: Sequence[str], nproc_per_node: str | None, *, grace_period: float,
                   stop_signal: str = "SIGTERM", check: bool = True,
                   gpus: Callable[[], int] = count_gpus) -> list[str]:
    """The argv an attempt runs: ``command`` itself when the job runs one process
    (``nproc_per_node`` None), else ``command`` under torchrun. ``check``: make sure the
    interpreter has torch first (not where it runs in a container, out of sight here)."""
    if not nproc_per_node:
        return list(command)
    argv = torchrun_argv(command, resolve_nproc(parse_nproc(nproc_per_node), gpus=gpus), grace_period=grace_period,
                         stop_signal=stop_signal)
    if check:
        check_torch(argv[0])
    return argv
