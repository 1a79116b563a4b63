"""The agent's own signals: SIGINT/SIGTERM become notices, whenever they arrive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from runctl.interruptions.signals import SignalSource

# An agent's watch loop at its tightest: nothing but poll(), until SIGUSR1 says the test is
# done. The test sends SIGINT after SIGINT meanwhile. So that some surely land at the worst
# moment, a profile hook also raises SIGINT each time poll() calls into C (Python runs the
# handler right there, in the middle of poll). With a lock in poll and in the handler, the
# first of those blocked the loop for good.
_POLL_LOOP = textwrap.dedent("""
    import os, signal, sys
    from runctl.interruptions.signals import SignalSource

    done = []
    signal.signal(signal.SIGUSR1, lambda *_: done.append(True))
    source = SignalSource()
    source.start()

    def sigint_inside_poll(frame, event, _arg):
        if event == "c_call" and frame.f_code is SignalSource.poll.__code__:
            signal.raise_signal(signal.SIGINT)

    sys.setprofile(sigint_inside_poll)
    print("polling", flush=True)
    received = 0
    while not done:
        if source.poll(0.0) is not None:
            received += 1
    sys.setprofile(None)
    print("received", received, flush=True)
    os._exit(0)  # with the handlers still ours: a signal still on its way changes nothing
""")


def test_sigint_during_a_tight_poll_loop_never_hangs_it():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", _POLL_LOOP], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "polling"
        sent = 0
        while proc.poll() is None and sent < 500:
            os.kill(proc.pid, signal.SIGINT)
            sent += 1
            time.sleep(0.002)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGUSR1)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the poll loop hung: no answer 20 s after {sent} SIGINTs and a SIGUSR1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"the poll loop died ({proc.returncode}) after {sent} SIGINTs:\n{err[-2000:]}"
    assert out.startswith("received ") and int(out.split()[1]) > 0, out


@pytest.fixture
def restored_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield before
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_construction_installs_nothing_until_start(restored_handlers):
    source = SignalSource()
    assert {s: signal.getsignal(s) for s in restored_handlers} == restored_handlers
    source.start()
    assert signal.getsignal(signal.SIGINT) != restored_handlers[signal.SIGINT]
    assert signal.getsignal(signal.SIGTERM) != restored_handlers[signal.SIGTERM]
    source.close()
    assert {s: signal.getsignal(s) for s in restored_handlers} == restored_handlers


def test_first_sigint_stops_the_second_kills_sigterm_terminates(restored_handlers):
    source = SignalSource(clock=lambda: 42.0)
    source.start()
    try:
        assert source.poll(0.0) is None and not source.stop_requested
        for signum in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
            signal.raise_signal(signum)
        notices = [source.poll(0.0) for _ in range(4)]
    finally:
        source.close()
    assert [(n.source, n.action, n.restartable, n.received) for n in notices[:3]] == [
        ("user", "stop-job", False, 42.0), ("user", "kill", False, 42.0), ("signal", "terminate", False, 42.0)]
    assert notices[3] is None
    assert source.stop_requested
