"""The job's environment as the CLI sees it: what the project declares, said in one line."""

from __future__ import annotations

from pathlib import Path


def declared(app, named, *, root: Path | None = None, synced: set[str] | None = None) -> dict | None:
    """The environment the project at ``root`` (default: here) declares for ``named`` (an
    ``Invocation``), as the JobSpec's ``environment`` record; the one line said on stderr.
    ``synced``: the files of the job's uploaded code, which must hold the declaration files.
    None when it declares nothing and has no setup commands: the job runs with the
    interpreter runctl runs in, as it always has."""
    from runctl.environment.detect import detect

    source = detect(root or Path.cwd(), named.script)
    if source.kind == "none" and not named.job.setup:
        return None
    missing = [name for name in source.files if synced is not None and name not in synced]
    if missing:
        from runctl.errors import UsageError

        raise UsageError(f"{missing[0]} is ignored (.gitignore or .runctlignore), so the instance could not build "
                         f"the job's environment from it; add --include {missing[0]}")
    setup = f"; setup: {len(named.job.setup)} command(s) of [jobs.{named.name}]" if named.job.setup else ""
    app.output.note(f"runctl: {source.describe()}{setup}")
    return source.to_dict()


def run_in_environment(app, spec, named, store):
    """``runctl run --setup``: ``spec`` run in the project's environment, built here (or
    restored from the store's cache, or found built already) under ``<runctl home>/envs``;
    uv's and the setup commands' output on stderr. Returns (spec, the attempt's label)."""
    import dataclasses
    import os
    import sys

    from runctl.agent.resident import default_home
    from runctl.environment.detect import EnvSource
    from runctl.environment.prepare import prepare

    record = declared(app, named)
    if record is None:
        app.output.note("runctl: --setup: nothing to build; running with this interpreter")
        return spec, None
    prepared = prepare(store, EnvSource.from_dict(record), workdir=Path(spec.workdir),
                       envs_root=default_home() / "envs", setup=named.job.setup, log_file=sys.stderr.buffer)
    summary = prepared.summary
    if prepared.upload is not None:
        # Here the upload ends before the script starts, as it did on instances: this process
        # may detach or end with the script, and a thread of it would be cut off.
        prepared.upload.finish()
        from runctl.environment.background_upload import IN_BACKGROUND

        summary = summary.replace(IN_BACKGROUND, prepared.upload.outcome())
        app.output.note(f"runctl: environment {prepared.upload.outcome()}")
    activated = prepared.activate(os.environ)
    command = _with_python(list(spec.command), str(prepared.python))
    return dataclasses.replace(spec, command=tuple(command), env={
        "VIRTUAL_ENV": activated["VIRTUAL_ENV"], "PATH": activated["PATH"], **spec.env}), summary


def _with_python(command: list[str], python: str) -> list[str]:
    """The command run by ``python``: this interpreter replaced, ``uv run --script S`` (a
    PEP 723 script, whose dependencies the environment now holds) run as ``python S``."""
    import sys

    if command[:1] == [sys.executable]:
        return [python, *command[1:]]
    if command[1:3] == ["run", "--script"]:
        return [python, *command[3:]]
    return command
