"""runctl.integrations.huggingface with a real (tiny, CPU, no hub) Hugging Face Trainer.

- under ``runctl run --rehearse 1``: on the agent's SIGTERM the callback has the Trainer save
  ``checkpoint-N`` at the end of the step and stop; the next attempt resumes from it, no step lost;
- a notice without a signal (``runctl.interrupted()``) saves and stops too, in process;
- without the library, importing the module says which pip extra to install;
- ``resume_from_checkpoint()`` passes over a half-written checkpoint.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from importlib.util import find_spec

import pytest

from runctl.agent.status import read_status
from runctl.store.local import LocalStore

# transformers is imported by the tests themselves, not at collection (it takes seconds).
needs = pytest.mark.skipif(any(find_spec(name) is None for name in ("torch", "transformers", "accelerate")),
                           reason="needs torch, transformers and accelerate: pip install 'runctl[examples]'")

MAX_STEPS = 300

# Attempt 0 trains slowly (50 ms a step), so that the interruption 8 s into it comes before the
# end; the next attempt runs at full speed. SIGTERM is held until the callback's handler is in
# place (on_train_begin): on a busy machine the notice may come while the imports still run,
# and would then kill the script before there is anything to save.
SCRIPT = """\
import signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
import json, os, sys, time
import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from runctl.integrations.huggingface import RunctlCallback, output_dir, resume_from_checkpoint

ATTEMPT = os.environ["RUNCTL_ATTEMPT"]

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1)
    def forward(self, x, labels=None):
        if ATTEMPT == "0":
            time.sleep(0.05)
        out = self.net(x)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}

class Data(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 4, generator=g)
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.x[i].sum(0, keepdim=True)}

class Started(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        with open(f"start-{ATTEMPT}.json", "w") as f:
            json.dump({"global_step": state.global_step, "resume": RESUME}, f)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

args = TrainingArguments(output_dir=output_dir(), max_steps=%d, save_steps=25, logging_steps=5,
                         per_device_train_batch_size=8, report_to=[], use_cpu=True, disable_tqdm=True,
                         dataloader_num_workers=0, seed=0)
callback = RunctlCallback()
trainer = Trainer(model=Tiny(), args=args, train_dataset=Data(), callbacks=[callback, Started()])
RESUME = resume_from_checkpoint()
trainer.train(resume_from_checkpoint=RESUME)
print(json.dumps({"global_step": trainer.state.global_step, "stopped": callback.stopped}))
sys.exit(143 if callback.stopped else 0)
""" % MAX_STEPS


@needs
def test_a_rehearsal_saves_on_sigterm_and_resumes_the_step_after(runctl_cli, tmp_path):
    (tmp_path / "train_hf.py").write_text(SCRIPT)
    done = runctl_cli("run", "train_hf.py", "--job-id", "hf", "--rehearse", "1", "--rehearse-at", "8s", timeout=150)
    assert done.returncode == 0, done.stderr
    assert "verdict: PASS" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr
    ends = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"global_step"')]
    assert len(ends) == 2 and ends[1] == {"global_step": MAX_STEPS, "stopped": False}
    assert ends[0]["stopped"] and ends[0]["global_step"] < MAX_STEPS  # train() returned early

    first, second = read_status(LocalStore(tmp_path / ".runctl" / "store"), "hf").attempts
    assert (first.reason, first.exit_code) == ("interrupted", 143)
    assert (second.reason, second.exit_code) == ("completed", 0)
    assert first.last_step == ends[0]["global_step"]
    assert second.resumed_from == first.final_snapshot is not None
    assert second.first_step == first.last_step + 1  # saved the step it was in: none lost
    assert second.last_step == MAX_STEPS

    folder = tmp_path / ".runctl" / "jobs" / "hf" / "checkpoints"
    start0 = json.loads((tmp_path / "start-0.json").read_text())
    start1 = json.loads((tmp_path / "start-1.json").read_text())
    assert start0 == {"global_step": 0, "resume": None}
    assert start1 == {"global_step": first.last_step, "resume": str(folder / f"checkpoint-{first.last_step}")}
    assert (folder / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").is_file()


# -- in process ------------------------------------------------------------------------------

def tiny_trainer(max_steps: int, callback, on_forward=None):
    """A Trainer on a one-layer nn.Module (no hub); ``on_forward`` runs in every forward."""
    import torch
    from torch import nn
    from transformers import Trainer, TrainingArguments

    from runctl.integrations.huggingface import output_dir

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(4, 1)

        def forward(self, x, labels=None):
            if on_forward:
                on_forward()
            out = self.net(x)
            return {"loss": nn.functional.mse_loss(out, labels), "logits": out}

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    data = [{"x": row, "labels": row.sum(0, keepdim=True)} for row in x]
    args = TrainingArguments(output_dir=output_dir(), max_steps=max_steps, save_steps=4, logging_steps=2,
                             per_device_train_batch_size=8, report_to=[], use_cpu=True, disable_tqdm=True,
                             dataloader_num_workers=0, seed=0)
    return Trainer(model=Tiny(), args=args, train_dataset=data, callbacks=[callback])


@pytest.fixture
def runctl_env(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    monkeypatch.setenv("RUNCTL_CHECKPOINT_DIR", str(folder))
    monkeypatch.setenv("RUNCTL_INTERRUPT_FILE", str(tmp_path / "notice.json"))
    monkeypatch.setenv("RUNCTL_PROGRESS_FILE", str(tmp_path / "progress.json"))
    return folder


@needs
def test_a_notice_without_a_signal_saves_that_step_and_stops(runctl_env, tmp_path, monkeypatch):
    from runctl.integrations.huggingface import RunctlCallback, resume_from_checkpoint

    calls = []

    def notice_during_step_7():
        calls.append(1)
        if len(calls) == 7:
            (tmp_path / "notice.json").write_text(json.dumps({"source": "test"}))

    callback = RunctlCallback()
    trainer = tiny_trainer(100, callback, notice_during_step_7)
    previous = signal.getsignal(signal.SIGTERM)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint())
    assert signal.getsignal(signal.SIGTERM) == previous  # put back at the end of train()
    assert callback.stopped and trainer.state.global_step == 7
    assert sorted(p.name for p in runctl_env.iterdir()) == ["checkpoint-4", "checkpoint-7"]
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["step"] == 7 and "loss" in progress["metrics"]

    # The next attempt: runctl restored the folder and set RUNCTL_RESUME_FROM.
    (tmp_path / "notice.json").unlink()
    monkeypatch.setenv("RUNCTL_RESUME_FROM", str(runctl_env / "checkpoint-7"))
    assert resume_from_checkpoint() == str(runctl_env / "checkpoint-7")
    callback = RunctlCallback()
    trainer = tiny_trainer(10, callback)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint())
    assert trainer.state.global_step == 10 and not callback.stopped
    assert json.loads((tmp_path / "progress.json").read_text())["step"] == 10
    history = json.loads((runctl_env / "checkpoint-10" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [2, 4, 6, 8, 10]  # carried on from 7


@needs
def test_resume_from_checkpoint_passes_over_a_half_written_one(runctl_env, monkeypatch):
    from runctl.integrations.huggingface import output_dir, resume_from_checkpoint

    for step, complete in ((100, True), (200, True), (300, False)):
        (runctl_env / f"checkpoint-{step}").mkdir(parents=True)
        (runctl_env / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"x")
        if complete:
            (runctl_env / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (runctl_env / "checkpoint-250.tmp").mkdir()
    assert resume_from_checkpoint() is None  # a fresh start, whatever the folder holds
    monkeypatch.setenv("RUNCTL_RESUME_FROM", str(runctl_env / "checkpoint-300"))
    assert resume_from_checkpoint() == str(runctl_env / "checkpoint-200")
    (runctl_env / "checkpoint-200" / "checkpoint-is-incomplete.txt").write_text("")
    assert resume_from_checkpoint() == str(runctl_env / "checkpoint-100")
    assert output_dir() == str(runctl_env)


def test_without_the_library_the_import_error_names_the_extra():
    code = "import sys; sys.modules['transformers'] = None; import runctl.integrations.huggingface"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert re.match(r"ImportError: runctl.integrations.huggingface needs .*'runctl\[examples\]'", last), last
