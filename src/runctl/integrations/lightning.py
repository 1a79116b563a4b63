"""PyTorch Lightning under runctl: checkpoints in runctl's folder, a clean stop on SIGTERM.

    import pytorch_lightning as pl
    from runctl.integrations.lightning import RunctlCheckpoint, ckpt_path

    callback = RunctlCheckpoint(every_n_steps=500)
    trainer = pl.Trainer(max_steps=10_000, callbacks=[callback])
    trainer.fit(model, datamodule, ckpt_path=ckpt_path())   # None on a fresh start
    if callback.stopped:
        sys.exit(143)   # interrupted: saved, do not go on as if training had finished

``RunctlCheckpoint`` reports ``global_step`` and the logged metrics to runctl, saves
``step-00000500.ckpt`` ... atomically into ``runctl.checkpoint_dir()`` (keeping the last
``keep_last`` locally; the store keeps its own history) and once more when training ends.
Being a ``Checkpoint`` callback, it replaces Lightning's default ``ModelCheckpoint`` (add one
yourself to keep "best" checkpoints too) and cannot go with ``enable_checkpointing=False``.

On SIGTERM, Lightning 2.x's own handler only records it (``trainer.received_sigterm``); at
the end of the current batch the loop raises ``SIGTERMException``, a ``SystemExit`` with no
code, so the script exits 0 without saving anything. This callback saves the checkpoint of
that step first (in ``on_train_batch_end``, or in ``on_exception`` when the signal came
during validation). When only ``runctl.interrupted()`` is true (a notice arrived, no signal
yet) it saves and sets ``trainer.should_stop``: ``fit`` then returns, and ``callback.stopped``
tells the script not to carry on as if training had finished.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import runctl
from runctl._script import flush_progress

try:
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.exceptions import SIGTERMException
except ImportError:  # the unified package names the same classes lightning.pytorch
    try:
        import lightning.pytorch as pl
        from lightning.pytorch.utilities.exceptions import SIGTERMException
    except ImportError as exc:
        raise ImportError(
            "runctl.integrations.lightning needs PyTorch Lightning: "
            "pip install 'runctl[examples]' (or pip install pytorch-lightning)"
        ) from exc

__all__ = ["RunctlCheckpoint", "ckpt_path"]

_NAME = re.compile(r"^step-(\d+)\.ckpt$")


def _saved_steps(folder: Path) -> list[tuple[int, Path]]:
    """This callback's checkpoints in ``folder``, oldest first (by step, not mtime: a restore
    gives every file the same modification time)."""
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.ckpt") if (m := _NAME.match(p.name))]
    return sorted(found)


def ckpt_path() -> str | None:
    """The checkpoint to pass as ``trainer.fit(..., ckpt_path=...)``; None on a fresh start.

    runctl's resume checkpoint when it is a ``.ckpt`` file, else the newest ``step-N.ckpt``
    of ``RunctlCheckpoint`` in ``runctl.checkpoint_dir()``.
    """
    resume = runctl.resume_from()
    if resume is None:
        return None
    if resume.is_file() and resume.suffix == ".ckpt":
        return str(resume)
    saved = _saved_steps(runctl.checkpoint_dir())
    return str(saved[-1][1]) if saved else None


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        try:
            if hasattr(value, "numel") and value.numel() != 1:
                continue
            out[name] = float(value)
        except (TypeError, ValueError):
            continue
    return out


class RunctlCheckpoint(pl.callbacks.Checkpoint):
    """Save into runctl's checkpoint folder every ``every_n_steps`` optimizer steps, at the end
    of training, and at the end of the step in which a stop was requested (SIGTERM or
    ``runctl.interrupted()``); report progress to runctl after every step.

    ``stopped`` is True once the callback stopped training for an interruption.
    """

    def __init__(self, every_n_steps: int = 500, keep_last: int = 3) -> None:
        super().__init__()
        if every_n_steps < 1 or keep_last < 1:
            raise ValueError("every_n_steps and keep_last must be at least 1")
        self.every_n_steps = every_n_steps
        self.keep_last = keep_last
        self.stopped = False
        self._last_saved: int | None = None
        self._last_reported: int | None = None
        self._metrics: dict[str, float] = {}

    @property
    def dirpath(self) -> Path:
        return runctl.checkpoint_dir()

    def save(self, trainer: pl.Trainer) -> Path:
        """Save the trainer's full state (model, optimizers, loops) as ``step-N.ckpt``, atomically."""
        step = trainer.global_step
        path = self.dirpath / f"step-{step:08d}.ckpt"
        if trainer.is_global_zero:
            runctl.save_atomic(path, lambda tmp: trainer.save_checkpoint(tmp, weights_only=False))
            for _step, old in _saved_steps(self.dirpath)[:-self.keep_last]:
                old.unlink(missing_ok=True)
        else:  # other ranks take part in the collective save; rank zero writes the file
            trainer.save_checkpoint(path, weights_only=False)
        self._last_saved = step
        return path

    def _stop_requested(self, trainer: pl.Trainer) -> bool:
        return bool(getattr(trainer, "received_sigterm", False)) or runctl.interrupted()

    def _report(self, trainer: pl.Trainer, refresh: bool) -> None:
        if refresh or not self._metrics:  # .item() syncs the device: not on every step
            self._metrics = _scalars(trainer.callback_metrics)
        if trainer.is_global_zero:
            runctl.progress(step=trainer.global_step, **self._metrics)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        stop = self._stop_requested(trainer)
        if step == self._last_reported and not stop:
            return  # a batch of gradient accumulation: no optimizer step yet
        self._last_reported = step
        due = step % self.every_n_steps == 0
        self._report(trainer, refresh=due or stop or step % max(trainer.log_every_n_steps, 1) == 0)
        if (due or stop) and step != self._last_saved:
            self.save(trainer)
        if stop:
            self.stopped = True
            trainer.should_stop = True  # after SIGTERM, Lightning raises SIGTERMException right after this hook
            flush_progress()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        flush_progress()
        if trainer.global_step != self._last_saved:
            self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # SIGTERM during validation: the evaluation loop raises before any train batch ends.
        if isinstance(exception, SIGTERMException) and trainer.global_step != self._last_saved:
            self.save(trainer)
            self.stopped = True
