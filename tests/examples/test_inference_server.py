"""training/examples/inference_server.py, driven as a user would: a checkpoint made by a real
``runctl run``, the server a real subprocess on a free port, real HTTP requests.

- /predict answers with what train.py's forward pass gives for the snapshot's weights;
  a wrong shape is a 422 that says what is wrong;
- a newer snapshot of the job: POST /reload swaps it in while requests keep being answered,
  each by either the old or the new model, never a mix; /health shows the newer step;
- a plain checkpoint file serves too; SIGTERM ends the server cleanly (exit code 0);
- on S3 with --wait: 503 until the job's first snapshot appears, then --reload-every finds it;
- no checkpoint, or no fastapi: one clear line, non-zero exit, no traceback.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from runctl.checkpoints import fetch_latest
from runctl.store import open_store
from runctl.store.layout import checkpoints_prefix
from runctl.agent.lease import Lease
from runctl.store.snapshots import Snapshots

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER = REPO_ROOT / "training" / "examples" / "inference_server.py"
TRAIN_PY = REPO_ROOT / "training" / "train.py"
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def load_train():
    spec = importlib.util.spec_from_file_location("train_for_inference_test", TRAIN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = load_train()


def forward_by_train_step(params: dict, x: list[float]) -> float:
    """train.py's own code: with lr 0 nothing changes and train_step's loss for target y is
    (f(x) - y)^2, so f(x) = (loss(y=0) - loss(y=1) + 1) / 2."""
    state = {"params": copy.deepcopy(params), "velocity": train.init_state(0)["velocity"]}
    at_0 = train.train_step(state, [(x, 0.0)], lr=0.0, momentum=0.0)
    at_1 = train.train_step(state, [(x, 1.0)], lr=0.0, momentum=0.0)
    assert state["params"] == params
    return (at_0 - at_1 + 1) / 2


def expected(params: dict, rows: list[list[float]]) -> list[float]:
    outputs = [train.predict(params, x) for x in rows]
    assert outputs == pytest.approx([forward_by_train_step(params, x) for x in rows], abs=1e-9)
    return outputs


def weights_of(job: str, store_url: str, dest: Path) -> tuple[int, dict]:
    """The (seq, params) of the job's latest snapshot, fetched as anyone would."""
    fetched = fetch_latest(job, dest, store=store_url)
    return fetched.seq, train.load_checkpoint(fetched.newest)["params"]


INPUTS = [[random.Random(n).uniform(-1, 1) for _ in range(train.INPUTS)] for n in range(3)]


# -- the server as a subprocess -----------------------------------------------------------

def call(port: int, method: str, path: str, body=None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with HTTP.open(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def call(self, method: str, path: str, body=None) -> tuple[int, dict]:
        return call(self.port, method, path, body)

    def health(self, status: int = 200, timeout: float = 20.0) -> dict:
        """/health's answer once it answers ``status``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited ({self.proc.returncode}):\n{self.log.read_text()}")
            try:
                code, body = self.call("GET", "/health")
                if code == status:
                    return body
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)
        pytest.fail(f"/health did not answer {status} within {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> str:
        """SIGTERM; asserts a clean exit and returns the server's output."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=15)
        output = self.log.read_text()
        assert code == 0, output
        assert "Finished server process" in output and "Traceback" not in output
        return output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(cwd: Path, env: dict, *args: str):
    port = free_port()
    log = cwd / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(SERVER), *args, "--port", str(port)], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Server(proc, port, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def train_further(job: str, store_url: str, work: Path, env: dict, steps: int, padding: int = 0):
    """The job's next stretch of training, done as an attempt of it would be (runctl refuses a
    second `run --job-id` of a completed job): train.py resumed from the job's latest snapshot,
    then its checkpoint folder committed as the job's next snapshot. ``padding`` bytes of an
    extra file make the snapshot slow enough to download that requests overlap a reload."""
    fetched = fetch_latest(job, work, store=store_url)
    subprocess.run([sys.executable, str(TRAIN_PY), "--steps", str(steps), "--checkpoint-every", "100"],
                   env={**env, "RUNCTL_CHECKPOINT_DIR": str(work), "RUNCTL_RESUME_FROM": str(fetched.newest)},
                   cwd=work, check=True, capture_output=True, timeout=60)
    if padding:
        (work / "optimizer-extra.bin").write_bytes(random.Random(1).randbytes(padding))
    newest = sorted(work.glob("ckpt-*.json"))[-1].name
    # As an attempt does: under the job's lease, whose generation fences the snapshot (an
    # unfenced one after fenced ones is stale, never the latest).
    store = open_store(store_url)
    lease = Lease(store, job)
    lease.acquire()
    try:
        return Snapshots(store, checkpoints_prefix(job)).commit(work, metadata={"newest": newest}, fence=lease.fence)
    finally:
        lease.release()


# -- tests ------------------------------------------------------------------------------------

def test_serves_predicts_reloads_a_newer_snapshot_and_stops_cleanly(runctl_cli, train_here, tmp_path, cli_env):
    done = runctl_cli("run", train_here, "--job-id", "served", "--", "--steps", 300, "--checkpoint-every", 100)
    assert done.returncode == 0, done.stderr
    store_url = str(tmp_path / ".runctl" / "store")  # the default store, where the server looks
    seq, params = weights_of("served", store_url, tmp_path / "old")
    old_outputs = expected(params, INPUTS)

    cache = tmp_path / "cache"
    with serving(tmp_path, cli_env, "--job", "served", "--cache", str(cache)) as server:
        health = server.health()
        assert (health["status"], health["job"], health["seq"], health["step"]) == ("ok", "served", seq, 300)
        assert server.call("POST", "/predict", {"inputs": INPUTS[0]}) == (
            200, {"prediction": old_outputs[0], "step": 300, "seq": seq})
        code, batch = server.call("POST", "/predict", {"inputs": INPUTS})
        assert code == 200 and batch["predictions"] == old_outputs

        code, wrong = server.call("POST", "/predict", {"inputs": INPUTS[0][:15]})
        assert code == 422 and wrong["detail"] == "inputs: expected 16 numbers, got 15"
        code, wrong = server.call("POST", "/predict", {"inputs": [INPUTS[0], [1.0, 2.0]]})
        assert code == 422 and wrong["detail"] == "inputs[1]: expected 16 numbers, got 2"
        code, wrong = server.call("POST", "/predict", {"inputs": "sixteen numbers"})
        assert code == 422 and "expected 16 numbers or a list of 16-number lists, got a str" in wrong["detail"]
        assert server.call("POST", "/reload")[1]["detail"] == "already latest"

        newer = train_further("served", store_url, tmp_path / "attempt", cli_env, steps=600, padding=48 << 20)
        new_seq, new_params = weights_of("served", store_url, tmp_path / "new")
        assert new_seq == newer.seq == seq + 1
        new_outputs = expected(new_params, INPUTS)
        assert new_outputs != old_outputs

        # Requests all through the reload: each answered by one whole model, old or new.
        answers, stop = [], threading.Event()

        def keep_asking():
            while not stop.is_set():
                started = time.monotonic()
                code, body = server.call("POST", "/predict", {"inputs": INPUTS})
                answers.append((started, time.monotonic(), code, body))

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            time.sleep(0.2)
            reload_started = time.monotonic()
            code, reloaded = server.call("POST", "/reload")
            reload_ended = time.monotonic()
            time.sleep(0.2)
        finally:
            stop.set()
            asker.join(timeout=30)
        assert code == 200, reloaded
        assert reloaded["reloaded"] is True
        assert {k: reloaded["old"][k] for k in ("seq", "step")} == {"seq": seq, "step": 300}
        assert {k: reloaded["new"][k] for k in ("seq", "step")} == {"seq": new_seq, "step": 600}
        for _start, _end, code, body in answers:
            assert code == 200, body
            assert (body["step"], body["predictions"]) in ((300, old_outputs), (600, new_outputs))
        during = [a for a in answers if a[0] > reload_started and a[1] < reload_ended]
        assert during, f"no request was answered during the {reload_ended - reload_started:.2f}s reload"
        assert answers[0][3]["step"] == 300 and answers[-1][3]["step"] == 600

        health = server.health()
        assert (health["job"], health["seq"], health["step"]) == ("served", new_seq, 600)
        assert server.call("POST", "/predict", {"inputs": INPUTS})[1]["predictions"] == new_outputs
        assert sorted(p.name for p in cache.iterdir()) == sorted(f.path for f in newer.files)  # old ones gone
        assert server.call("POST", "/reload")[1] == {"reloaded": False, "detail": "already latest",
                                                     "current": reloaded["new"]}
        output = server.stop()
    assert f"serving job served snapshot {new_seq}, step 600" in output, output

    # A plain checkpoint file serves the same numbers, without a job.
    plain = sorted((tmp_path / "old").glob("ckpt-*.json"))[-1]
    with serving(tmp_path, cli_env, "--job", str(plain)) as server:
        health = server.health()
        assert (health["job"], health["seq"], health["step"], health["checkpoint"]) == (None, None, 300, plain.name)
        assert server.call("POST", "/predict", {"inputs": INPUTS})[1]["predictions"] == old_outputs
        server.stop()


def test_on_s3_it_waits_for_the_first_snapshot_then_polls_it_in(moto_server, s3_bucket, runctl_cli, train_here,
                                                                 tmp_path, cli_env):
    job_url = f"s3://{s3_bucket}/runs/jobs/on-s3"
    with serving(tmp_path, cli_env, "--job", job_url, "--wait", "--reload-every", "0.3") as server:
        waiting = server.health(status=503)
        assert waiting["status"] == "waiting" and "no complete checkpoint snapshot" in waiting["detail"]
        code, refused = server.call("POST", "/predict", {"inputs": INPUTS[0]})
        assert code == 503 and refused["detail"].startswith("no model loaded yet")

        done = runctl_cli("run", train_here, "--store", f"s3://{s3_bucket}/runs", "--job-id", "on-s3",
                          "--", "--steps", 300, "--checkpoint-every", 100)
        assert done.returncode == 0, done.stderr
        health = server.health()
        assert (health["job"], health["step"]) == ("on-s3", 300)
        seq, params = weights_of(job_url, None, tmp_path / "fetched")
        assert health["seq"] == seq
        assert server.call("POST", "/predict", {"inputs": INPUTS})[1]["predictions"] == expected(params, INPUTS)
        server.stop()


def test_no_checkpoint_or_no_fastapi_is_one_clear_line(tmp_path, cli_env):
    done = subprocess.run([sys.executable, str(SERVER), "--job", "no-such-job"], cwd=tmp_path, env=cli_env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        f"inference_server: no complete checkpoint snapshot at {(tmp_path / '.runctl' / 'store').as_uri()}"
        "/jobs/no-such-job/checkpoints"]

    blocked = ("import runpy, sys; sys.modules['fastapi'] = None; "
               f"sys.argv = ['inference_server.py', '--job', 'x']; runpy.run_path({str(SERVER)!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", blocked], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "inference_server: this example needs fastapi and uvicorn: pip install 'runctl[serve]'"]
