"""runctl: run ML training jobs that survive losing their machine.

In a training script::

    import runctl
    ckpt = runctl.resume_from()          # newest checkpoint, or None on a fresh start
    ...
    runctl.save_atomic(runctl.checkpoint_dir() / "step-100.pt", lambda p: torch.save(state, p))
    runctl.progress(step=100, loss=0.3)
    if runctl.interrupted(): ...         # a spot notice arrived: save and exit

Importing runctl loads only the standard library.
"""

from runctl._script import checkpoint_dir, interrupted, progress, resume_from, save_atomic

__version__ = "0.1.0"

__all__ = ["__version__", "checkpoint_dir", "interrupted", "progress", "resume_from", "save_atomic"]
