"""runctl.integrations.lightning with a real (tiny, CPU) PyTorch Lightning Trainer.

- under ``runctl run --rehearse 1``: the agent's SIGTERM makes the callback save the step it
  was in and Lightning stop; the next attempt resumes from that checkpoint, no step lost;
- a notice without a signal (``runctl.interrupted()``) saves and stops too, in process;
- without the library, importing the module says which pip extra to install;
- ``ckpt_path()`` picks the checkpoint runctl restored, or None on a fresh start.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from runctl.agent.status import read_status
from runctl.store.local import LocalStore

# Lightning is imported by the tests themselves, not at collection (it takes seconds).
needs = pytest.mark.skipif(find_spec("torch") is None or find_spec("pytorch_lightning") is None,
                           reason="needs torch and pytorch-lightning: pip install 'runctl[examples]'")

MAX_STEPS = 300

# Attempt 0 trains slowly (50 ms a step), so that the interruption 8 s into it comes before the
# end; the next attempt runs at full speed. SIGTERM is held until Lightning's handler is in
# place (on_train_start): on a busy machine the notice may come while the imports still run,
# and would then kill the script before there is anything to save.
SCRIPT = """\
import signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
import json, os, sys, time
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
import pytorch_lightning as pl
from runctl.integrations.lightning import RunctlCheckpoint, ckpt_path

ATTEMPT = os.environ["RUNCTL_ATTEMPT"]

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1)
    def on_train_start(self):
        with open(f"start-{ATTEMPT}.json", "w") as f:
            json.dump({"global_step": self.trainer.global_step, "ckpt_path": PATH}, f)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    def training_step(self, batch, batch_idx):
        if ATTEMPT == "0":
            time.sleep(0.05)
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

torch.manual_seed(0)
x = torch.randn(64, 4)
data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8, shuffle=True)
callback = RunctlCheckpoint(every_n_steps=25)
trainer = pl.Trainer(max_steps=%d, callbacks=[callback], logger=False, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu", devices=1, log_every_n_steps=5)
PATH = ckpt_path()
trainer.fit(Tiny(), data, ckpt_path=PATH)
print(json.dumps({"global_step": trainer.global_step, "stopped": callback.stopped}))
sys.exit(143 if callback.stopped else 0)
""" % MAX_STEPS


@needs
def test_a_rehearsal_saves_on_sigterm_and_resumes_the_step_after(runctl_cli, tmp_path):
    (tmp_path / "train_pl.py").write_text(SCRIPT)
    done = runctl_cli("run", "train_pl.py", "--job-id", "pl", "--rehearse", "1", "--rehearse-at", "8s", timeout=150)
    assert done.returncode == 0, done.stderr
    assert "verdict: PASS" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr
    ends = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"global_step"')]
    assert ends == [{"global_step": MAX_STEPS, "stopped": False}]  # attempt 0 never got past fit()

    first, second = read_status(LocalStore(tmp_path / ".runctl" / "store"), "pl").attempts
    # Lightning turns SIGTERM into SystemExit() at the end of the batch: exit code 0. (143 if
    # the callback saw the notice file in the instant before the signal arrived, and stopped.)
    assert first.reason == "interrupted" and first.exit_code in (0, 143)
    assert (second.reason, second.exit_code) == ("completed", 0)
    assert 1 <= first.last_step < MAX_STEPS  # stopped early
    assert second.resumed_from == first.final_snapshot is not None
    assert second.first_step == first.last_step + 1  # saved the step it was in: none lost
    assert second.last_step == MAX_STEPS

    folder = tmp_path / ".runctl" / "jobs" / "pl" / "checkpoints"
    start0 = json.loads((tmp_path / "start-0.json").read_text())
    start1 = json.loads((tmp_path / "start-1.json").read_text())
    assert start0 == {"global_step": 0, "ckpt_path": None}
    assert start1 == {"global_step": first.last_step, "ckpt_path": str(folder / f"step-{first.last_step:08d}.ckpt")}
    saved = sorted(p.name for p in folder.glob("*.ckpt"))  # beside it: runctl's mark, .runctl-tmp-job
    assert len(saved) == 3 and saved[-1] == f"step-{MAX_STEPS:08d}.ckpt"  # keep_last=3, the final one last


# -- in process ------------------------------------------------------------------------------

def tiny_module(notice: Path | None = None, notice_at: int = 0):
    """A one-layer LightningModule; during step ``notice_at`` it writes the ``notice`` file."""
    import pytorch_lightning as pl
    import torch
    from torch import nn

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(4, 1)
            self.started_at: int | None = None

        def on_train_start(self):
            self.started_at = self.trainer.global_step

        def training_step(self, batch, batch_idx):
            if notice is not None and self.trainer.global_step + 1 == notice_at:
                notice.write_text(json.dumps({"source": "test"}))
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return Tiny()


def tiny_data():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    x = torch.randn(64, 4)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def tiny_trainer(max_steps: int, callback):
    import pytorch_lightning as pl

    return pl.Trainer(max_steps=max_steps, callbacks=[callback], logger=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", devices=1, log_every_n_steps=1)


@pytest.fixture
def runctl_env(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    monkeypatch.setenv("RUNCTL_CHECKPOINT_DIR", str(folder))
    monkeypatch.setenv("RUNCTL_INTERRUPT_FILE", str(tmp_path / "notice.json"))
    monkeypatch.setenv("RUNCTL_PROGRESS_FILE", str(tmp_path / "progress.json"))
    return folder


@needs
def test_a_notice_without_a_signal_saves_that_step_and_stops(runctl_env, tmp_path, monkeypatch):
    from runctl.integrations.lightning import RunctlCheckpoint, ckpt_path

    callback = RunctlCheckpoint(every_n_steps=4, keep_last=2)
    trainer = tiny_trainer(100, callback)
    previous = signal.getsignal(signal.SIGTERM)
    trainer.fit(tiny_module(tmp_path / "notice.json", notice_at=11), tiny_data())
    assert signal.getsignal(signal.SIGTERM) == previous  # Lightning put the handler back
    assert callback.stopped and trainer.global_step == 11
    assert sorted(p.name for p in runctl_env.iterdir()) == ["step-00000008.ckpt", "step-00000011.ckpt"]
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["step"] == 11 and set(progress["metrics"]) == {"train_loss"}

    # The next attempt: runctl restored the folder and points at its newest entry.
    (tmp_path / "notice.json").unlink()
    monkeypatch.setenv("RUNCTL_RESUME_FROM", str(runctl_env / "step-00000011.ckpt"))
    assert ckpt_path() == str(runctl_env / "step-00000011.ckpt")
    callback = RunctlCheckpoint(every_n_steps=4, keep_last=2)
    trainer = tiny_trainer(15, callback)
    model = tiny_module()
    trainer.fit(model, tiny_data(), ckpt_path=ckpt_path())
    assert model.started_at == 11 and trainer.global_step == 15 and not callback.stopped
    assert sorted(p.name for p in runctl_env.iterdir()) == ["step-00000012.ckpt", "step-00000015.ckpt"]


@needs
def test_ckpt_path(tmp_path, monkeypatch):
    from runctl.integrations.lightning import ckpt_path

    folder = tmp_path / "ckpt"
    folder.mkdir()
    monkeypatch.setenv("RUNCTL_CHECKPOINT_DIR", str(folder))
    for name in ("step-00000090.ckpt", "step-00000100.ckpt", "best.ckpt", "notes.txt"):
        (folder / name).write_bytes(b"x")
    assert ckpt_path() is None  # a fresh start, whatever the folder holds
    monkeypatch.setenv("RUNCTL_RESUME_FROM", str(folder / "best.ckpt"))
    assert ckpt_path() == str(folder / "best.ckpt")  # runctl's newest entry, when a .ckpt file
    monkeypatch.setenv("RUNCTL_RESUME_FROM", str(folder / "notes.txt"))
    assert ckpt_path() == str(folder / "step-00000100.ckpt")  # else the callback's newest step


def test_without_the_library_the_import_error_names_the_extra():
    code = ("import sys; sys.modules['pytorch_lightning'] = sys.modules['lightning'] = None; "
            "import runctl.integrations.lightning")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert re.match(r"ImportError: runctl.integrations.lightning needs .*pip install 'runctl\[examples\]'", last), last
