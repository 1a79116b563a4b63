"""runctl run: run a script under the agent, locally, resuming from the store."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import click

from runctl.cli import _common
from runctl.cli._args import script_args, script_command
from runctl.cli._context import output_option, pass_app
from runctl.cli._env import with_env_options, with_environment
from runctl.cli._named import invocation, not_found_hint
from runctl.cli._torchrun import checked_nproc, nproc_option
from runctl.errors import EXIT_INTERRUPTED, EXIT_JOB_FAILED, JobFailed, UsageError

EXIT_BY_STATE = {"completed": 0, "failed": EXIT_JOB_FAILED, "stopped": EXIT_INTERRUPTED}


@script_command(name="run", short_help="Run a script locally under the agent; resume it from the store.")
@_common.store_option()
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Local folder the script saves checkpoints in (default: .runctl/jobs/JOB/checkpoints).")
@click.option("--job-id", help="Name of the job (default: derived from the script and its arguments).")
@click.option("--grace", type=click.FloatRange(min=0), help="Seconds between the stop signal and SIGKILL (default 90).")
@click.option("--stop-signal", help="Signal that asks the script to save and stop (default SIGTERM).")
@click.option("--max-restarts", type=click.IntRange(min=0), help="Restarts after interruptions (default 3).")
@click.option("--max-restarts-on-errors", type=click.IntRange(min=0), help="Restarts after the script fails (default 0).")
@click.option("--resume-args", help='Arguments added when resuming, e.g. "--resume {checkpoint}".')
@click.option("--sync-interval", type=click.FloatRange(min=0),
              help="Least seconds between uploads of a checkpoint rewritten in place (default 0: as soon as it "
                   "settles, unless uploads would take more than [checkpoint] max_upload_share of the time).")
@click.option("--keep-last-n", type=click.IntRange(min=1), help="Complete snapshots kept in the store (default 5).")
@click.option("--rehearse", type=click.IntRange(min=0), default=0,
              help="Preemption rehearsal: inject N interruptions, then report what they cost.")
@click.option("--rehearse-at", metavar="TIMES", help="When, into each attempt, e.g. 20s,45s (default: random 5-15s).")
@click.option("--spot-notices/--no-spot-notices", default=None,
              help="Watch the EC2 metadata service for spot notices (default: on when running on EC2 spot).")
@click.option("--detach", is_flag=True, help="Run in the background; follow with runctl logs JOB -f.")
@click.option("--docker", "docker", is_flag=True,
              help="Run in the project's Docker image (built first when its content changed).")
@click.option("--docker-image", metavar="IMAGE", help="Run in this prebuilt Docker image.")
@with_env_options
@nproc_option
@click.option("--setup", "setup_env", is_flag=True,
              help="Build the project's environment with uv (its dependencies and the job's setup commands; cached) "
                   "and run in it (default: this interpreter, as it is).")
@output_option
@pass_app
def run(app, script, store, checkpoint_dir, job_id, grace, stop_signal, max_restarts, max_restarts_on_errors,
        resume_args, sync_interval, keep_last_n, rehearse, rehearse_at, spot_notices, detach, docker, docker_image,
        env, secret, nproc_per_node, setup_env):
    """Run SCRIPT (a .py file, any command, or a job NAME of .runctl.toml) under the agent.

    \b
    The script gets RUNCTL_CHECKPOINT_DIR (restored from the store before it starts),
    RUNCTL_RESUME_FROM (its newest checkpoint, when resuming), RUNCTL_JOB_ID,
    RUNCTL_ATTEMPT and RUNCTL_INTERRUPT_FILE. Its arguments go after --:
        runctl run training/train.py --rehearse 2 -- --steps 5000

    \b
    A file named SCRIPT wins over a [jobs.SCRIPT] of the same name; a job's keys are
    defaults that the options here override, and the arguments after -- follow its args.
    """
    from runctl.agent.command import resolve_command
    from runctl.agent.workspace import check_checkpoint_folder, ensure_writable, refuse_a_foreign_folder
    from runctl.interruptions.rehearsal import parse_rehearse_at, plan_offsets
    from runctl.models import JobSpec

    config = app.config
    named = with_environment(invocation(config, script, script_args()), env, secret)
    if named.shadows:
        app.output.note(f"runctl: {script} is a file here: running it, not [jobs.{named.shadows}]")
    try:
        command = resolve_command(named.script, named.args)
    except UsageError as exc:
        where = f" (the script of [jobs.{named.name}])" if named.name else not_found_hint(config)
        raise UsageError(f"{exc}{where}") from None
    # torch looked for here, unless the script runs in an image (its interpreter, out of sight).
    nproc = nproc_per_node if nproc_per_node is not None else named.job.nproc_per_node
    nproc_per_node = checked_nproc(command, nproc, torch_here=not (docker or docker_image))
    if rehearse_at and not rehearse:
        rehearse = len(parse_rehearse_at(rehearse_at))
    offsets = plan_offsets(rehearse, parse_rehearse_at(rehearse_at) if rehearse_at else None, random.Random())
    job_store = _common.open_job_store(app, store)
    # A named job gets the id of the command it stands for: `runctl run train` and the same
    # script with the same arguments spelled out are one job (see _common.derived_job_id).
    job_id = _common.resolve_job_id(job_store, job_id, named.script, named.args)
    asked, _origin = named.checkpoint_dir(checkpoint_dir, config)
    # ~ as a shell would expand it: [checkpoint] dir = "~/ckpt" never names a folder called "~".
    folder = (Path(asked) if asked else _common.job_run_dir(job_id) / "checkpoints").expanduser().resolve()
    signal_name = (stop_signal or config.local.stop_signal).upper()
    signal_name = signal_name if signal_name.startswith("SIG") else f"SIG{signal_name}"
    _check_signal(signal_name)
    spec = JobSpec(
        job_id=job_id, command=tuple(command), store_url=job_store.url, checkpoint_dir=str(folder),
        workdir=str(Path.cwd()),
        grace_period=config.local.grace_period if grace is None else grace,
        stop_signal=signal_name,
        max_restarts=max(_first(max_restarts, named.job.max_restarts, config.local.max_restarts), rehearse),
        max_restarts_on_errors=(config.local.max_restarts_on_errors if max_restarts_on_errors is None
                                else max_restarts_on_errors),
        resume_args=named.resume_args(resume_args),
        env=dict(named.job.env),
        secrets=dict(named.job.secrets),
        sync_interval=config.checkpoint.sync_interval if sync_interval is None else sync_interval,
        max_upload_share=config.checkpoint.max_upload_share,
        keep_last_n=config.checkpoint.keep_last_n if keep_last_n is None else keep_last_n,
        nproc_per_node=nproc_per_node,
    )
    # Here, before any note: a bad folder is one line on stderr. The agent checks again.
    check_checkpoint_folder(spec)
    ensure_writable(folder)
    refuse_a_foreign_folder(folder, job_id, _latest_snapshot(job_store, job_id))
    if docker or docker_image:
        spec = _in_image(app, spec, docker_image)
    labels = {}
    if setup_env and not (docker or docker_image):  # an image is the environment
        from runctl.cli._environment import run_in_environment

        spec, built = run_in_environment(app, spec, named, job_store)
        labels = {"environment": built} if built else {}
    # None: watch only when running on an EC2 spot instance (found out at start).
    watch = {"spot_notices": (config.local.spot_notices or None) if spot_notices is None else spot_notices,
             "rebalance_is_interruption": config.local.rebalance_is_interruption}
    if detach:
        _detach(app, spec, offsets, job_store, watch)
        return
    status, report, warnings = _run_here(app, spec, job_store, offsets, watch, labels)
    code = EXIT_BY_STATE.get(status.state, EXIT_JOB_FAILED)
    if report is not None and report.verdict != "pass" and code == 0:
        code = EXIT_JOB_FAILED
    app.output.report({"job_id": job_id, "status": status, "rehearsal": report, "warnings": list(warnings)},
                      lambda: _render_outcome(app, status, report))
    click.get_current_context().exit(code)


def _first(*values):
    """The first value that is set: the option, then the job's key, then the configuration."""
    return next(v for v in values if v is not None)


def _latest_snapshot(store, job_id: str):
    from runctl.store import layout
    from runctl.store.snapshots import Snapshots

    return Snapshots(store, layout.checkpoints_prefix(job_id)).latest()


def _in_image(app, spec, image):
    """The spec run in the project's image (built when missing) or in ``image``."""
    import dataclasses

    from runctl.cli._images import build_local, docker_cli

    if image:
        cli = docker_cli()
        if not cli.image_exists(image):
            cli.pull(image)
    else:
        _cli, built = build_local(app)
        image = built.local_ref
    app.output.note(f"runctl: running in Docker image {image}")
    return dataclasses.replace(spec, image=image, gpus=app.config.docker.gpus)


def _check_signal(name: str) -> None:
    import signal

    if name not in signal.Signals.__members__:
        raise UsageError(f"unknown signal {name!r} for --stop-signal; use e.g. SIGTERM, SIGINT or SIGUSR1")


def _run_here(app, spec, store, offsets, watch, labels=None):
    from runctl.agent.report import rehearsal_report
    from runctl.agent.supervisor import Agent, AgentOptions
    from runctl.interruptions import sources_for

    sources, rehearsal = sources_for(offsets, watch["spot_notices"])
    out = sys.stderr.buffer if app.output.is_json else sys.stdout.buffer  # keep stdout for the JSON
    options = AgentOptions(run_dir=_common.job_run_dir(spec.job_id), sinks=(out, sys.stderr.buffer),
                           wipe_between_attempts=rehearsal is not None,
                           rebalance_is_interruption=watch["rebalance_is_interruption"],
                           attempt_labels=labels or {})
    if rehearsal:
        app.output.note(f"runctl: rehearsal: {len(offsets)} interruption(s), at "
                        + ", ".join(f"{o:g}s" for o in offsets) + " into attempts " + ", ".join(map(str, range(len(offsets)))))
    events = _EventLine(app)
    agent = Agent(spec, store, sources, options, events=events)
    app.output.note(f"runctl: job {spec.job_id}, store {store.url}, checkpoints in {spec.checkpoint_dir}")
    status = agent.run()
    report = None
    if rehearsal:
        this_run = [a for a in status.attempts if a.started >= agent.started]
        report = rehearsal_report(this_run, rehearsal.planned, rehearsal.injected, status.state)
    return status, report, events.warnings


class _EventLine:
    """Renders the agent's events as 'runctl: ...' lines on stderr. Routine snapshots are
    shown at most once a minute (all of them with -v, or after a notice in this attempt);
    the end of each attempt names its last snapshot anyway."""

    SNAPSHOT_EVERY_S = 60.0

    def __init__(self, app) -> None:
        self._app = app
        self._last_snapshot_line = float("-inf")
        self._noticed = False
        self.warnings: list[str] = []  # for --output json

    def __call__(self, event) -> None:
        import time

        if event.kind in ("notice", "attempt"):
            self._noticed = event.kind == "notice"  # the machine may go: show every snapshot
        if event.kind == "snapshot" and not (self._app.output.verbose or self._noticed):
            now = time.monotonic()
            if now - self._last_snapshot_line < self.SNAPSHOT_EVERY_S:
                return
            self._last_snapshot_line = now
        if event.kind == "warning":
            self.warnings.append(event.message)
            self._app.output.note(click.style(f"runctl: warning: {event.message}", fg="yellow", bold=True))
            return
        color = {"notice": "yellow", "kill": "red"}.get(event.kind)
        self._app.output.note(click.style(f"runctl: {event.message}", fg=color, bold=event.kind == "done"))


def _render_outcome(app, status, report) -> None:
    if report is None:
        return
    rows = []
    for cost in report.attempts:
        rows.append((cost.number, cost.reason, "fresh" if cost.resumed_from is None else f"snapshot {cost.resumed_from}",
                     f"{cost.first_step}-{cost.last_step}" if cost.last_step is not None else "-",
                     f"{cost.seconds:.1f}s" if cost.seconds is not None else "-",
                     "-" if cost.steps_lost is None else cost.steps_lost,
                     "-" if cost.seconds_lost is None else f"{cost.seconds_lost:.1f}s"))
    app.output.table(("attempt", "ended", "resumed from", "steps", "time", "steps lost", "time lost"), rows,
                     title=f"Preemption rehearsal: {report.injected} of {report.planned} interruptions")
    verdict = click.style("PASS", fg="green", bold=True) if report.verdict == "pass" else click.style("FAIL", fg="red", bold=True)
    app.output.line(f"verdict: {verdict}")
    for problem in report.problems:
        app.output.line(f"  - {problem}")


def _detach(app, spec, offsets, store, watch) -> None:
    run_dir = _common.job_run_dir(spec.job_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    request = run_dir / "agent-request.json"
    request.write_text(json.dumps({"spec": spec.to_dict(), "rehearse_offsets": offsets, **watch}))
    with open(run_dir / "agent.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "runctl.agent", str(request)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True, cwd=spec.workdir)
    _wait_until_listed(store, spec.job_id, proc, run_dir / "agent.log")
    app.output.report({"job_id": spec.job_id, "agent_pid": proc.pid},
                      lambda: app.output.line(f"job {spec.job_id} started in the background (agent pid {proc.pid}); "
                                              f"follow it with: runctl logs {spec.job_id} -f"))


def _wait_until_listed(store, job_id: str, proc, log_path: Path, timeout: float = 30.0) -> None:
    """Return once the job's status.json exists, so that the `runctl logs JOB -f` we suggest
    finds the job; say so at once if the agent died before writing it."""
    import time

    from runctl.agent.status import read_status

    deadline = time.monotonic() + timeout
    while read_status(store, job_id) is None and time.monotonic() < deadline:
        if proc.poll() is not None:
            lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
            raise JobFailed(f"the agent stopped at once (exit code {proc.returncode}): "
                            f"{lines[-1] if lines else 'no output'}; see {log_path}")
        time.sleep(0.05)
