"""The attempt's process tree, through the real CLI: a script that ignores SIGTERM is
killed after the grace period and its files are still snapshotted; children inside and
outside the process group get the stop signal; a grandchild that detached into its own
session does not outlive the attempt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from runctl.agent.status import read_status
from runctl.store import layout
from runctl.store.local import LocalStore
from runctl.store.snapshots import Snapshots
from waiting import wait_for


def store_of(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / ".runctl" / "store")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


IGNORES_SIGTERM = """\
import json, os, signal, sys, time
from pathlib import Path
folder = Path(os.environ["RUNCTL_CHECKPOINT_DIR"])
if os.environ["RUNCTL_ATTEMPT"] != "0":
    print("restored " + json.dumps(sorted(p.name for p in folder.iterdir())))
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
(folder / "weights.bin").write_bytes(bytes(range(256)) * 40)
with open(folder / "growing.log", "a") as log:  # open for writing until the end
    n = 0
    while True:
        log.write(f"{n}\\n")
        log.flush()
        n += 1
        time.sleep(0.02)
"""


def test_a_script_ignoring_sigterm_is_killed_after_the_grace_and_its_files_snapshotted(runctl_cli, tmp_path):
    (tmp_path / "stubborn.py").write_text(IGNORES_SIGTERM)
    done = runctl_cli("run", "stubborn.py", "--job-id", "stubborn", "--grace", "1",
                      "--rehearse", "1", "--rehearse-at", "1.5s", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "grace period over: killing the process tree" in done.stderr

    store = store_of(tmp_path)
    first, second = read_status(store, "stubborn").attempts
    assert first.reason == "interrupted" and first.exit_code == -signal.SIGKILL
    waited = first.ended - first.interruption["received"]
    assert 1.0 <= waited < 6.0, waited  # the grace period, then SIGKILL and the final snapshot
    assert first.final_snapshot is not None

    snaps = Snapshots(store, layout.checkpoints_prefix("stubborn"))
    latest = snaps.latest()
    assert latest.seq == first.final_snapshot == second.resumed_from
    sizes = {f.path: f.size for f in latest.files}
    assert sizes["weights.bin"] == 256 * 40 and sizes["growing.log"] > 0
    restored = tmp_path / "restored"
    snaps.restore(latest, restored)
    assert (restored / "weights.bin").read_bytes() == bytes(range(256)) * 40
    lines = (restored / "growing.log").read_text().splitlines()
    assert lines == [str(n) for n in range(len(lines))]  # whole lines: written until the kill
    # Attempt 1 got them back, beside runctl's mark on the folder (never part of a snapshot).
    assert 'restored [".runctl-tmp-job", "growing.log", "weights.bin"]' in done.stdout


SPAWNS_CHILDREN = """\
import os, signal, subprocess, sys, time
from pathlib import Path
marks = Path(sys.argv[1])
CHILD = '''
import os, signal, sys, time
from pathlib import Path
mark = Path(sys.argv[1])
def on_term(signum, frame):
    mark.write_text("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
Path(sys.argv[1] + ".ready").write_text(str(os.getpid()))
time.sleep(120)
'''
children = []
def on_term(signum, frame):
    for child in children:
        child.wait()
    sys.exit(143)
signal.signal(signal.SIGTERM, on_term)
children.append(subprocess.Popen([sys.executable, "-c", CHILD, str(marks / "same-group")]))
children.append(subprocess.Popen([sys.executable, "-c", CHILD, str(marks / "own-session")], start_new_session=True))
(marks / "parent.ready").write_text(str(os.getpid()))
time.sleep(120)
"""


def test_children_get_the_stop_signal_in_and_outside_the_group(tmp_path, cli_env):
    (tmp_path / "spawner.py").write_text(SPAWNS_CHILDREN)
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "runctl", "run", "spawner.py", "--job-id", "spawner",
                             "--grace", "20", "--", str(marks)], cwd=tmp_path, env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = [marks / "parent.ready", marks / "same-group.ready", marks / "own-session.ready"]
        wait_for(f"{[str(p) for p in ready]}", lambda: all(p.exists() for p in ready), proc, timeout=20, interval=0.02)
        proc.send_signal(signal.SIGTERM)  # the machine or a supervisor stops runctl
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert (marks / "same-group").read_text() == "SIGTERM"
    assert (marks / "own-session").read_text() == "SIGTERM"
    attempt = read_status(store_of(tmp_path), "spawner").attempts[-1]
    assert attempt.reason == "stopped" and attempt.exit_code == 143  # it exited after its children
    assert "grace period over" not in err
    for path in ready:
        assert gone(int(path.read_text())), path.name


DETACHES_A_GRANDCHILD = """\
import os, signal, sys, time
pidfile = sys.argv[1]
if os.fork() == 0:
    os.setsid()  # its own session, away from the attempt's process group
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pidfile + ".tmp", pidfile)
        time.sleep(120)
    os._exit(0)
os.wait()
while not os.path.exists(pidfile):
    time.sleep(0.01)
print("parent done")
"""


def test_a_detached_grandchild_is_killed_when_the_attempt_ends(runctl_cli, tmp_path):
    (tmp_path / "detach.py").write_text(DETACHES_A_GRANDCHILD)
    pidfile = tmp_path / "grandchild.pid"
    started = time.monotonic()
    done = runctl_cli("run", "detach.py", "--job-id", "detach", "--", pidfile, timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "parent done" in done.stdout
    assert "killed 1 leftover process(es)" in done.stderr
    pid = int(pidfile.read_text())
    assert gone(pid), psutil.Process(pid).cmdline()
    # The grandchild held the script's output pipes: the attempt must not wait on them.
    assert took < 8.0, took
    assert json.loads((tmp_path / ".runctl" / "store" / "jobs" / "detach" / "status.json").read_text())[
        "state"] == "completed"


ORPHAN_REPORTS_ITS_PARENT = """
import os, sys, time
child = os.fork()
if child == 0:
    if os.fork() == 0:  # the grandchild, orphaned once its parent exits
        time.sleep(0.3)
        open(sys.argv[1], "w").write(str(os.getppid()))
        os._exit(0)
    os._exit(0)
os.waitpid(child, 0)
time.sleep(1.5)
"""


def test_an_agent_run_in_process_adopts_orphans_only_while_it_runs(tmp_path):
    # A program that runs the agent in-process (a test, a notebook) must not stay a
    # subreaper: it would adopt every later orphan and never reap it, and a shell waiting
    # with `kill -0` on such an orphan would wait on a zombie forever.
    from runctl.agent.process import is_subreaper
    from runctl.agent.supervisor import Agent, AgentOptions
    from runctl.models import JobSpec

    assert not is_subreaper()
    report = tmp_path / "parent.txt"
    store = store_of(tmp_path)
    spec = JobSpec("orphans", (sys.executable, "-c", ORPHAN_REPORTS_ITS_PARENT, str(report)),
                   store.url, str(tmp_path / "ckpt"), str(tmp_path))
    assert Agent(spec, store, [], AgentOptions(run_dir=tmp_path / "run")).run().state == "completed"
    assert int(report.read_text()) == os.getpid()  # adopted while the job ran

    assert not is_subreaper()
    later = subprocess.run(["sh", "-c", "sleep 2 & echo $!"], capture_output=True, text=True, check=True)
    orphan = psutil.Process(int(later.stdout))
    assert orphan.ppid() != os.getpid()  # an orphan of a later child is not ours any more
    orphan.kill()
