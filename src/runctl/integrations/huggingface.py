"""The Hugging Face Trainer under runctl: checkpoints in runctl's folder, a clean stop on SIGTERM.

    from transformers import Trainer, TrainingArguments
    from runctl.integrations.huggingface import RunctlCallback, output_dir, resume_from_checkpoint

    args = TrainingArguments(output_dir=output_dir(), save_steps=500, save_total_limit=3, ...)
    callback = RunctlCallback()
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    trainer.train(resume_from_checkpoint=resume_from_checkpoint())   # None on a fresh start
    if callback.stopped:
        sys.exit(143)   # interrupted: saved, do not go on as if training had finished

The Trainer saves ``checkpoint-N`` folders in ``output_dir`` (``runctl.checkpoint_dir()``),
which runctl keeps in its store and restores before the next attempt starts;
``resume_from_checkpoint()`` names the newest *complete* one (its ``trainer_state.json``,
written last, is there). ``RunctlCallback`` reports ``global_step`` and the logged metrics to
runctl after every step and, once SIGTERM arrived or ``runctl.interrupted()`` is true, sets
``control.should_save`` and ``control.should_training_stop`` at the end of the current step:
the Trainer saves ``checkpoint-N`` and ``train()`` returns.

Without it, the Trainer (transformers 5.x) leaves SIGTERM alone and the process dies at once,
with nothing saved since the last ``save_steps``. Its opt-in ``enable_jit_checkpoint=True``
handles SIGTERM too, but waits 3 s before asking for the checkpoint; both can be on (this
callback calls the handler it replaced).
"""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

import runctl
from runctl._script import flush_progress

try:
    from transformers import TrainerCallback
except ImportError as exc:
    raise ImportError(
        "runctl.integrations.huggingface needs the Hugging Face Trainer: "
        "pip install 'runctl[examples]' (or pip install transformers accelerate)"
    ) from exc

__all__ = ["RunctlCallback", "output_dir", "resume_from_checkpoint"]

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_COMPLETE = "trainer_state.json"  # the Trainer writes it last into checkpoint-N
_INCOMPLETE = "checkpoint-is-incomplete.txt"  # the sentinel of the Trainer's JIT checkpoints


def output_dir() -> str:
    """The ``output_dir`` for ``TrainingArguments``: runctl's checkpoint folder."""
    return str(runctl.checkpoint_dir())


def resume_from_checkpoint(folder: str | Path | None = None) -> str | None:
    """The newest complete ``checkpoint-N`` in ``folder`` (default: ``output_dir()``) for
    ``trainer.train(resume_from_checkpoint=...)``; None on a fresh start (runctl restored no
    snapshot) or when no checkpoint there is complete.

    A checkpoint caught half-written (a snapshot taken while the Trainer was saving it, a
    machine lost meanwhile) is passed over for the one before.
    """
    if runctl.resume_from() is None:
        return None
    root = Path(folder) if folder is not None else runctl.checkpoint_dir()
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    for _step, path in sorted(found, reverse=True):
        if (path / _COMPLETE).is_file() and not (path / _INCOMPLETE).exists():
            return str(path)
    return None


class RunctlCallback(TrainerCallback):
    """Report progress to runctl; save and stop at the end of the step in which SIGTERM or an
    interruption notice arrived. ``stopped`` is True once it stopped training."""

    def __init__(self) -> None:
        self.stopped = False
        self._sigterm = False
        self._previous = None
        self._installed = False
        self._metrics: dict[str, float] = {}

    # -- SIGTERM, noted while train() runs -------------------------------------------------
    def _on_sigterm(self, signum, frame) -> None:
        self._sigterm = True
        if callable(self._previous):  # e.g. the Trainer's own JIT checkpoint handler
            self._previous(signum, frame)

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True

    def on_train_end(self, args, state, control, **kwargs):
        flush_progress()
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    # -- progress and the stop ---------------------------------------------------------------
    def on_log(self, args, state, control, logs=None, **kwargs):
        # The latest value of each metric (eval and end-of-training logs hold other keys).
        self._metrics.update({k: float(v) for k, v in (logs or {}).items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)})
        if state.is_world_process_zero:
            runctl.progress(step=state.global_step, **self._metrics)

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            runctl.progress(step=state.global_step, **self._metrics)
        if self._sigterm or runctl.interrupted():
            control.should_save = True
            control.should_training_stop = True
            self.stopped = True
            flush_progress()
        return control
