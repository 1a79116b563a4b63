"""The supervised process tree: start it in its own group, signal it, leave nothing behind.

The agent makes itself the *subreaper* of its tree (Linux), so a grandchild that detaches
(double fork, its own session) is re-parented to the agent rather than to init, and is
still found and killed when the attempt ends. The direct child dies with the agent
(``PR_SET_PDEATHSIG``), so an agent killed with SIGKILL does not leave training running.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import BinaryIO

import psutil

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37

# Runs in the child before exec: die with the agent, then become the real command.
# A small Python trampoline instead of preexec_fn, which is unsafe once threads exist.
_TRAMPOLINE = (
    "import ctypes,os,signal,sys\n"
    "ctypes.CDLL(None,use_errno=True).prctl(1,signal.SIGKILL)\n"
    "os.getppid()!=int(sys.argv[1]) and os._exit(137)\n"
    "try:os.execvp(sys.argv[2],sys.argv[2:])\n"
    "except OSError as e:sys.stderr.write('runctl: cannot run %s: %s\\n'%(sys.argv[2],e.strerror));os._exit(127)\n"
)


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, value, 0, 0, 0) == 0


def is_subreaper() -> bool:
    """Whether this process adopts its orphaned descendants (always False off Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    flag = ctypes.c_int(0)
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and flag.value != 0


@contextlib.contextmanager
def subreaper() -> Iterator[bool]:
    """Adopt orphaned descendants (Linux only) while the block runs; yields whether it took effect.

    Scoped, not for the life of the process: a program that runs the supervisor in-process
    (a test, a notebook) would otherwise adopt, and never reap, every orphan of its later
    children, and anyone waiting on such an orphan's pid would wait on a zombie forever.
    """
    was = is_subreaper()
    took = was or _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    try:
        yield took
    finally:
        if took and not was:
            _prctl(_PR_SET_CHILD_SUBREAPER, 0)


class ProcessTree:
    """One attempt's process: its group, its output pumps, and every descendant."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None,
                 sinks: tuple[BinaryIO | None, BinaryIO | None], log_file: BinaryIO) -> None:
        self.argv = list(argv)
        self._env = dict(env)
        self._cwd = cwd
        self._sinks = sinks
        self._log_file = log_file
        self._log_lock = threading.Lock()
        self._pumps: list[threading.Thread] = []
        self.popen: subprocess.Popen | None = None
        self._pidfd: int | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> None:
        argv = self.argv
        if sys.platform.startswith("linux"):
            argv = [sys.executable, "-S", "-c", _TRAMPOLINE, str(os.getpid()), *argv]
        try:
            self.popen = subprocess.Popen(
                argv, env=self._env, cwd=self._cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            )
        except OSError as exc:  # the trampoline hides exec errors; this covers the rest
            raise RuntimeError(f"cannot start {self.argv[0]}: {exc.strerror}") from exc
        for stream, sink in zip((self.popen.stdout, self.popen.stderr), self._sinks):
            pump = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            pump.start()
            self._pumps.append(pump)

    def _pump(self, stream: BinaryIO, sink: BinaryIO | None) -> None:
        """Copy the child's output to the terminal and the log file as it comes."""
        fd = stream.fileno()
        while chunk := os.read(fd, 65536):
            with self._log_lock:
                self._log_file.write(chunk)
                self._log_file.flush()
            if sink is not None:
                try:
                    sink.write(chunk)
                    sink.flush()
                except (OSError, ValueError):  # terminal gone: keep logging to the file
                    pass
        stream.close()

    def poll(self) -> int | None:
        assert self.popen is not None
        return self.popen.poll()

    def files_open_for_writing(self) -> set[str]:
        """Absolute paths any process of the tree holds open for writing (Linux)."""
        paths: set[str] = set()
        for proc in self.descendants():
            try:
                paths.update(f.path for f in proc.open_files() if getattr(f, "mode", "w") != "r")
            except psutil.Error:
                continue
        return paths

    def descendants(self) -> list[psutil.Process]:
        """Every live process below the agent: the child's tree and adopted orphans."""
        try:
            return [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
        except psutil.Error:
            return []

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the child's process group and to every descendant outside it."""
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
        for proc in self.descendants():
            try:
                if os.getpgid(proc.pid) != self.pid:
                    proc.send_signal(signum)
            except (ProcessLookupError, psutil.Error, OSError):
                pass

    def kill_all(self) -> int:
        """SIGKILL the whole tree, adopted orphans included, and reap them. Returns how many."""
        killed = 0
        for _ in range(50):  # a fork bomb could refill the tree; bound the rounds
            # The direct child is killed and reaped through Popen: reaped by psutil, its
            # exit status would be lost and Popen would report exit code 0.
            procs = [p for p in self.descendants() if self.popen is None or p.pid != self.popen.pid]
            child_alive = self.popen is not None and self.popen.poll() is None
            if not procs and not child_alive:
                break
            if child_alive:
                try:
                    self.popen.kill()
                    killed += 1
                except OSError:
                    pass
            for proc in procs:
                try:
                    proc.kill()
                    killed += 1
                except psutil.Error:
                    pass
            if child_alive:
                try:
                    self.popen.wait(2)
                except subprocess.TimeoutExpired:
                    pass
            psutil.wait_procs(procs, timeout=2)
        self._reap_adopted()
        return killed

    def _reap_adopted(self) -> None:
        """Collect exit statuses of orphans re-parented to us, so no zombie stays."""
        try:
            children = psutil.Process().children()
        except psutil.Error:
            return
        for proc in children:
            if self.popen is not None and proc.pid == self.popen.pid:
                continue
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(proc.pid, os.WNOHANG)
            except (psutil.Error, ChildProcessError, OSError):
                pass

    def wait_briefly(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking as soon as the child exits.

        Linux: wait on a pidfd, which costs nothing (``Popen.wait(timeout)`` polls in a
        loop, a measurable share of the agent's CPU over a long run). Elsewhere: sleep.
        """
        assert self.popen is not None
        if self._pidfd is None and hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(self.popen.pid)
            except OSError:  # already reaped, or a kernel without pidfds
                self._pidfd = -1
        if self._pidfd is not None and self._pidfd >= 0:
            select.select([self._pidfd], [], [], seconds)
        else:
            time.sleep(seconds)

    def wait(self, timeout: float | None = None) -> int:
        assert self.popen is not None
        code = self.popen.wait(timeout)
        if self._pidfd is not None and self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        for pump in self._pumps:
            # Output pipes close when the last writer exits; a lingering grandchild
            # holding them is killed by kill_all before this.
            pump.join(timeout=5)
        return code


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
