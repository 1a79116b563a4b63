"""The job's environment as the CLI sees it: what the project declares, said in one line."""

from __future__ import annotations

from pathlib import Path


def declared(app, named, *, root: Path | None = None) -> dict | None:
    """The environment the project at ``root`` (default: here) declares for ``named`` (an
    ``Invocation``), as the JobSpec's ``environment`` record; the one line said on stderr.
    None when it declares nothing and has no setup commands: the job runs with the
    interpreter runctl runs in, as it always has."""
    from runctl.environment.detect import detect

    source = detect(root or Path.cwd(), named.script)
    if source.kind == "none" and not named.job.setup:
        return None
    setup = f"; setup: {len(named.job.setup)} command(s) of [jobs.{named.name}]" if named.job.setup else ""
    app.output.note(f"runctl: {source.describe()}{setup}")
    return source.to_dict()
