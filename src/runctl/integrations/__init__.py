"""Callbacks that connect training frameworks to runctl's in-script API.

Each module imports its framework only when it is itself imported, so ``import runctl``
stays standard-library only:

- ``runctl.integrations.lightning``: ``RunctlCheckpoint`` and ``ckpt_path()`` for PyTorch
  Lightning (``trainer.fit(model, ckpt_path=ckpt_path())``);
- ``runctl.integrations.huggingface``: ``RunctlCallback``, ``output_dir()`` and
  ``resume_from_checkpoint()`` for the Hugging Face Trainer.

Both save a checkpoint and stop cleanly at the end of the current step when the agent sends
SIGTERM or an interruption notice arrives (``runctl.interrupted()``), report progress with
``runctl.progress()``, and resume from the checkpoint runctl restored. Install the libraries
with ``pip install 'runctl[examples]'``.
"""
