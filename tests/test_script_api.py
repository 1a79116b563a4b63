"""The in-script API (``import runctl``): what a training script sees of runctl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

import runctl
from runctl import _script
from runctl.fsutil import TEMP_MARKER


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if TEMP_MARKER in p.name]


# -- save_atomic ------------------------------------------------------------------------------

def test_save_atomic_bytes_and_text(tmp_path):
    target = tmp_path / "deep" / "ckpt.bin"
    assert runctl.save_atomic(target, b"\x00weights") == target  # creates the folder
    assert target.read_bytes() == b"\x00weights"
    runctl.save_atomic(str(target), "text ü")
    assert target.read_text(encoding="utf-8") == "text ü"
    assert leftovers(tmp_path) == []


def test_save_atomic_with_a_file_writer(tmp_path):
    seen: list[Path] = []

    def writer(temp: Path) -> None:
        seen.append(temp)
        assert temp.parent == tmp_path and TEMP_MARKER in temp.name
        assert not (tmp_path / "model.pt").exists()  # nothing at the real name while writing
        temp.write_bytes(b"model")

    runctl.save_atomic(tmp_path / "model.pt", writer)
    assert (tmp_path / "model.pt").read_bytes() == b"model"
    assert len(seen) == 1 and not seen[0].exists()
    assert leftovers(tmp_path) == []


def test_save_atomic_with_a_folder_writer_replaces_the_old_folder(tmp_path):
    def save_pretrained(files: dict[str, bytes]):
        def writer(temp: Path) -> None:
            temp.mkdir()
            for name, data in files.items():
                (temp / name).parent.mkdir(parents=True, exist_ok=True)
                (temp / name).write_bytes(data)
        return writer

    target = tmp_path / "checkpoint-100"
    runctl.save_atomic(target, save_pretrained({"config.json": b"{}", "weights/a.bin": b"a"}))
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "config.json", "weights/a.bin"]
    runctl.save_atomic(target, save_pretrained({"model.safetensors": b"new"}))
    assert [p.name for p in target.iterdir()] == ["model.safetensors"]  # the old files are gone
    assert (target / "model.safetensors").read_bytes() == b"new"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-100"]


def test_a_failing_writer_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "ckpt.pt"
    runctl.save_atomic(target, b"good")

    def half_then_crash(temp: Path) -> None:
        temp.write_bytes(b"hal")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        runctl.save_atomic(target, half_then_crash)
    assert target.read_bytes() == b"good"

    def folder_then_crash(temp: Path) -> None:
        temp.mkdir()
        (temp / "part").write_bytes(b"p")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        runctl.save_atomic(tmp_path / "folder-ckpt", folder_then_crash)
    assert not (tmp_path / "folder-ckpt").exists()
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_a_writer_that_writes_nothing_is_an_error_without_leftovers(tmp_path):
    with pytest.raises(OSError):
        runctl.save_atomic(tmp_path / "x.pt", lambda temp: None)
    assert list(tmp_path.iterdir()) == []


# -- checkpoint_dir, resume_from, interrupted ---------------------------------------------------

def test_checkpoint_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runctl.checkpoint_dir() == Path("checkpoints") and (tmp_path / "checkpoints").is_dir()
    monkeypatch.setenv("TRAINCTL_CHECKPOINT_DIR", str(tmp_path / "old-name"))
    assert runctl.checkpoint_dir() == tmp_path / "old-name"
    monkeypatch.setenv("RUNCTL_CHECKPOINT_DIR", str(tmp_path / "new-name"))
    assert runctl.checkpoint_dir() == tmp_path / "new-name" and (tmp_path / "new-name").is_dir()


def test_resume_from(monkeypatch, tmp_path):
    assert runctl.resume_from() is None
    monkeypatch.setenv("RUNCTL_RESUME_FROM", "")
    assert runctl.resume_from() is None
    monkeypatch.setenv("RUNCTL_RESUME_FROM", str(tmp_path / "ckpt-3.pt"))
    assert runctl.resume_from() == tmp_path / "ckpt-3.pt"


def test_interrupted_polls_the_flag_file(monkeypatch, tmp_path):
    assert runctl.interrupted() is False  # outside runctl
    flag = tmp_path / "interrupt-0.json"
    monkeypatch.setenv("RUNCTL_INTERRUPT_FILE", str(flag))
    assert runctl.interrupted() is False
    flag.write_text(json.dumps({"source": "spot"}))
    assert runctl.interrupted() is True


# -- progress ------------------------------------------------------------------------------------

@pytest.fixture
def fresh_progress(monkeypatch):
    monkeypatch.setattr(_script, "_progress", _script._ProgressWriter())
    return _script._progress


def test_progress_outside_runctl_is_a_no_op(tmp_path, monkeypatch, fresh_progress):
    monkeypatch.chdir(tmp_path)
    runctl.progress(step=1, loss=0.5)
    assert list(tmp_path.iterdir()) == []


def test_progress_writes_step_and_first_step(tmp_path, monkeypatch, fresh_progress):
    target = tmp_path / "progress-1.json"
    monkeypatch.setenv("RUNCTL_PROGRESS_FILE", str(target))
    runctl.progress(step=1491, loss=0.25)
    first = json.loads(target.read_text())
    assert first["step"] == 1491 and first["first_step"] == 1491 and first["metrics"] == {"loss": 0.25}
    for step in range(1492, 1500):
        runctl.progress(step=step)
    fresh_progress.flush()  # what the next write after 0.1 s, or the process's exit, does
    last = json.loads(target.read_text())
    assert last["step"] == 1499 and last["first_step"] == 1491 and isinstance(last["time"], float)
    fresh_progress.written_at = float("-inf")  # as if 0.1 s had passed
    runctl.progress(loss=1.0)  # metrics only
    assert json.loads(target.read_text())["step"] is None
    assert leftovers(tmp_path) == []


def test_progress_is_written_at_most_ten_times_a_second(tmp_path, monkeypatch, fresh_progress):
    writes = []
    monkeypatch.setattr(_script, "_write_progress", lambda target, record: writes.append(record["step"]))
    monkeypatch.setenv("RUNCTL_PROGRESS_FILE", str(tmp_path / "progress.json"))
    for step in range(1, 2001):
        runctl.progress(step=step)
    assert writes[0] == 1 and len(writes) < 100  # the first at once, then at most every 0.1 s
    fresh_progress.flush()
    assert writes[-1] == 2000


def test_the_last_progress_is_written_at_exit(tmp_path, cli_env):
    target = tmp_path / "progress.json"
    script = "import runctl\nfor step in range(1, 5001): runctl.progress(step=step)\n"
    done = subprocess.run([sys.executable, "-c", script], env={**cli_env, "RUNCTL_PROGRESS_FILE": str(target)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(target.read_text())["step"] == 5000


def test_progress_never_raises(tmp_path, monkeypatch, fresh_progress):
    monkeypatch.setenv("RUNCTL_PROGRESS_FILE", str(tmp_path / "no-such-folder" / "progress.json"))
    runctl.progress(step=1)  # advisory: a broken progress file must not stop training


# -- cheap to import --------------------------------------------------------------------------------

def test_import_runctl_loads_only_the_standard_library():
    code = ("import sys; before = set(sys.modules); import runctl; "
            "print('\\n'.join(sorted(set(sys.modules) - before)))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCTL_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    loaded = {name.split(".")[0] for name in out.split()}
    foreign = sorted(loaded - set(sys.stdlib_module_names) - {"runctl"})
    assert foreign == [], f"import runctl loaded {foreign}"


# -- the step a checkpoint holds, for the agent (runctl.agent.steps) ---------------------------

def test_save_atomic_records_the_step_its_checkpoint_holds(tmp_path, monkeypatch, fresh_progress):
    target, folder = tmp_path / "progress.json", tmp_path / "ckpt"
    monkeypatch.setenv("RUNCTL_PROGRESS_FILE", str(target))
    monkeypatch.setenv("RUNCTL_CHECKPOINT_DIR", str(folder))
    runctl.progress(step=300)
    runctl.save_atomic(folder / "last.pt", b"step 300")
    for step in range(301, 340):
        runctl.progress(step=step)  # later steps: throttled, not written yet
    runctl.save_atomic(folder / "sub" / "best.pt", b"step 320", step=320)  # an explicit step wins
    runctl.save_atomic(tmp_path / "elsewhere.pt", b"not watched")  # outside the folder: nothing to tell
    record = json.loads(target.read_text())
    assert [(rel, step) for rel, step, _when in record["saves"]] == [("last.pt", 300), ("sub/best.pt", 320)]
    when = record["saves"][0][2]
    assert (folder / "last.pt").stat().st_mtime <= when  # taken once the file was in place
    assert record["step"] == 339  # written with the save: the newest report
    assert leftovers(tmp_path) == []


def test_save_atomic_outside_runctl_records_nothing(tmp_path, monkeypatch, fresh_progress):
    monkeypatch.chdir(tmp_path)
    runctl.progress(step=3)
    runctl.save_atomic(tmp_path / "checkpoints" / "last.pt", b"x")
    assert fresh_progress.saves == deque() and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


def test_progress_records_when_each_step_was_reported(tmp_path, monkeypatch, fresh_progress):
    target = tmp_path / "progress.json"
    monkeypatch.setenv("RUNCTL_PROGRESS_FILE", str(target))
    now = [1000.0]
    monkeypatch.setattr(_script.time, "time", lambda: now[0])
    for step in range(1, 6):
        runctl.progress(step=step)
        runctl.progress(step=step, loss=0.1)  # the same step again: no new entry
        now[0] += 0.5
    fresh_progress.flush()
    fresh_progress.written_at = float("-inf")
    runctl.progress(step=6)
    assert json.loads(target.read_text())["recent"] == [[1000.0 + 0.5 * n, n + 1] for n in range(6)]
