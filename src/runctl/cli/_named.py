"""Named jobs: the SCRIPT of ``runctl run`` and ``runctl aws train|run`` may name a
``[jobs.NAME]`` table of the configuration.

What SCRIPT means, first match wins:

1. a file here (``train.py``, ``./train``): it runs, even when a job has the same name, so
   a job table never silently replaces the script the user sees in the folder (a note says
   so when a job has that name);
2. a job of the configuration: its script, with its args followed by those after ``--``;
3. anything else, as before: a command (on PATH), or "not found" naming the jobs there are.

A job's keys are defaults: an option on the command line overrides the key it matches.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runctl.config import Config, JobConfig
from runctl.errors import ConfigError


@dataclass(frozen=True)
class Invocation:
    """What to run: the script, its full arguments and the job table that applies."""

    script: str
    args: tuple[str, ...]
    job: JobConfig = field(default_factory=JobConfig)  # an empty table for a plain script
    name: str | None = None  # the [jobs.NAME] run; None for a plain script
    shadows: str | None = None  # the job a file of the same name won over

    def checkpoint_dir(self, flag: str | Path | None, config: Config) -> tuple[str | None, str]:
        """The checkpoint folder asked for and what asked for it (for messages):
        --checkpoint-dir, then the job's checkpoint_dir, then [checkpoint] dir."""
        for value, origin in ((flag, "--checkpoint-dir"), (self.job.checkpoint_dir, f"[jobs.{self.name}] checkpoint_dir"),
                              (config.checkpoint.dir, "[checkpoint] dir")):
            if value is not None:
                return str(value), origin
        return None, ""

    def resume_args(self, flag: str | None) -> tuple[str, ...]:
        """--resume-args (one string, split as a shell would), else the job's list."""
        import shlex

        return tuple(shlex.split(flag)) if flag else self.job.resume_args


def invocation(config: Config, script: str, args: tuple[str, ...], *,
               is_file: Callable[[str], bool] = os.path.isfile) -> Invocation:
    """Resolve SCRIPT (see the module docstring); ``args`` are those after ``--``."""
    if is_file(script) or script not in config.jobs:
        return Invocation(script, args, shadows=script if script in config.jobs else None)
    job = config.jobs[script]
    if job.script is None:
        where = next((origin for key, origin in config.origins.items() if key.startswith(f"jobs.{script}.")),
                     str(config.source_path))
        raise ConfigError(f"[jobs.{script}] has no script (in {where}); add e.g. script = \"train.py\"")
    return Invocation(job.script, (*job.args, *args), job, script)


def not_found_hint(config: Config) -> str:
    """What to add to a "script not found" line: the jobs SCRIPT could have named."""
    if not config.jobs:
        return ""
    source = config.source_path
    shown = source.name if source is not None and source.parent == Path.cwd() else str(source)
    return f", or a job of {shown}: {', '.join(sorted(config.jobs))}"
