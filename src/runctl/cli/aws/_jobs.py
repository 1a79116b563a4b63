"""Sending a job to an instance's agent and following it: what ``aws train`` and ``aws run``
share. The code is uploaded content-addressed (only changed files); the job's job.json and
the instance's assignment go to the store, where the agent picks them up."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import click

from runctl.cli import _common
from runctl.cli._output import human_size
from runctl.errors import EXIT_INTERRUPTED, EXIT_JOB_FAILED, UsageError

EXIT_BY_STATE = {"completed": 0, "stopped": EXIT_INTERRUPTED}
FINAL_STATES = frozenset({"completed", "failed", "stopped", "interrupted"})
AGENT_STALE_AFTER_S = 60.0  # the agent beats every 5 s
BOOT_TIMEOUT_S = 900.0  # from launch to the agent's first beat: Python, venv, pip install


def auto_resume_on(app, flag: bool | None) -> bool:
    return app.config.aws.auto_resume if flag is None else flag


def with_code_options(func):
    """--sync-code/--no-sync-code, --include and --job-id: what reaches the instance, and as
    which job (shared by aws train and aws run)."""
    for option in reversed((
        click.option("--sync-code/--no-sync-code", default=None,
                     help="Upload the project folder (honouring .gitignore and .runctlignore) for the job "
                          "(default: yes, except when the job runs in a Docker image, which holds the code)."),
        click.option("--include", "includes", multiple=True, metavar="PATTERN",
                     help="Also upload files an ignore file leaves out (gitignore syntax); repeatable."),
        click.option("--job-id", help="Name of the job (default: derived from the script and its arguments)."),
        # Kept on the click context (not a parameter of each command): job_spec reads it.
        click.option("--setup/--no-setup", default=True, expose_value=False, callback=_remember_setup,
                     help="Build the project's environment on the instance with uv (requirements.txt, "
                          "pyproject.toml, inline metadata; cached in the bucket) and run the job in it "
                          "(default); --no-setup: the instance's runctl interpreter as it is."),
    )):
        func = option(func)
    return func


_SETUP_KEY = "runctl.aws.setup"


def _remember_setup(ctx, _param, value: bool) -> bool:
    ctx.meta[_SETUP_KEY] = value
    return value


def _setup_asked() -> bool:
    context = click.get_current_context(silent=True)
    return context is None or context.meta.get(_SETUP_KEY, True)


def with_checkpoint_options(func):
    """--checkpoint-dir and --resume-args, as on ``runctl run`` (shared by aws train and aws run)."""
    for option in reversed((
        click.option("--checkpoint-dir", metavar="DIR", type=click.Path(file_okay=False),
                     help="Folder of the project the script saves checkpoints in; on the instance it is inside "
                          "the job's code folder, restored there (default: [checkpoint] dir, else one the "
                          "agent chooses outside the code)."),
        click.option("--resume-args", help='Arguments added when resuming, e.g. "--resume {checkpoint}".'),
    )):
        func = option(func)
    return func


def resolve_script(app, script: str, args: tuple[str, ...]):
    """SCRIPT and the arguments after ``--`` as a ``runctl.cli._named.Invocation``: a file, or
    a job of the configuration (noted when a file of that name wins over a job)."""
    from runctl.cli._named import invocation

    named = invocation(app.config, script, args)
    if named.shadows:
        app.output.note(f"runctl: {script} is a file here: sending it, not [jobs.{named.shadows}]")
    return named


def instance_checkpoint_dir(app, named, flag: str | None) -> str | None:
    """The job's checkpoint folder on the instance, relative to its code folder ('/'-separated),
    as a local run's is relative to the project; None: the agent chooses one outside the code.
    Refused (UsageError) when it leads out of the project, or where ``runctl run`` would
    refuse it in the project: the project itself, or a folder holding the script."""
    from runctl.agent.workspace import checkpoint_folder_problem, code_folder_problem

    asked, origin = named.checkpoint_dir(flag, app.config)
    if asked is None:
        return None
    root = Path.cwd().resolve()
    rel = os.path.relpath(os.path.abspath(os.path.expanduser(asked)), root).replace(os.sep, "/")
    script = root / named.script
    problem = code_folder_problem(rel) or checkpoint_folder_problem(
        (root / rel).resolve(), home=None, workdirs=(root,), store_root=None,
        job_files=[script.resolve()] if script.is_file() else [])
    if problem:
        raise UsageError(f"checkpoint folder {asked} ({origin}) {problem}; on the instance the checkpoint folder "
                         f"is a folder of the job's code (the project {root}): give the job one of its own there, "
                         "e.g. --checkpoint-dir checkpoints")
    return rel


@dataclass(frozen=True)
class SentJob:
    job_id: str
    instance_id: str
    assignment_id: str
    first_attempt: int  # attempts before this submission (their logs are not this run's)
    report: dict


def send_job(app, job_store, instance_id: str, named, *, job_id: str | None = None,
             checkpoint_dir: str | None = None, resume_args: tuple[str, ...] = (),
             sync_code: bool = True, includes: tuple[str, ...] = (),
             prepared: tuple[tuple[str, ...], str | None] | None = None, image=None,
             nproc_per_node: str | None = None) -> SentJob:
    """Upload the code, write job.json and the instance's assignment (the instance is
    known to run). ``named``: the ``Invocation`` of ``resolve_script``; the settings come
    from its job table, then the configuration, as for ``runctl run``. ``checkpoint_dir``:
    ``instance_checkpoint_dir``'s. ``prepared``: ``prepare_code``'s result when the code was
    uploaded already."""
    from runctl.agent.assignment import write_job_spec
    from runctl.agent.status import read_status

    job_id = _common.resolve_job_id(job_store, job_id, named.script, named.args)
    judged = _refuse_busy(job_store, instance_id, job_id)
    command, tree = prepared or prepare_code(app, job_store, named, sync_code, includes, checkpoint_dir)
    spec = job_spec(app, job_store, named, job_id, command, tree, checkpoint_dir=checkpoint_dir,
                    resume_args=resume_args, image=image, nproc_per_node=nproc_per_node)
    previous = read_status(job_store, job_id)
    write_job_spec(job_store, spec)
    assignment = _claim(job_store, instance_id, job_id, judged)
    _note_agent(app, job_store, instance_id)
    report = {"job_id": job_id, "instance_id": instance_id, "store": job_store.url, "code_tree": tree,
              "command": list(command), "image": image.ref if image is not None else None}
    return SentJob(job_id, instance_id, assignment.assignment_id, len(previous.attempts) if previous else 0, report)


def job_spec(app, job_store, named, job_id: str, command: tuple[str, ...], tree: str | None, *,
             checkpoint_dir: str | None, resume_args: tuple[str, ...], image=None,
             nproc_per_node: str | None = None, nodes: int = 1):
    """The job's spec as an instance's agent runs it: the settings come from its job table,
    then the configuration, as for ``runctl run``."""
    from runctl.agent.assignment import remote_spec
    from runctl.cli._environment import declared

    config = app.config
    # An image is the job's environment; without the code, the instance has no project to read.
    environment = None
    if image is None and tree is not None and _setup_asked():
        from runctl.codesync import read_tree

        environment = declared(app, named, synced={f.path for f in read_tree(job_store, tree).files})
    signal_name = config.local.stop_signal.upper()
    return remote_spec(
        job_id, command, job_store.url, code_tree=tree, checkpoint_dir=checkpoint_dir,
        resume_args=resume_args, env=dict(named.job.env), secrets=dict(named.job.secrets),
        grace_period=config.local.grace_period,
        stop_signal=signal_name if signal_name.startswith("SIG") else f"SIG{signal_name}",
        max_restarts=config.local.max_restarts if named.job.max_restarts is None else named.job.max_restarts,
        max_restarts_on_errors=config.local.max_restarts_on_errors,
        sync_interval=config.checkpoint.sync_interval, max_upload_share=config.checkpoint.max_upload_share,
        keep_last_n=config.checkpoint.keep_last_n,
        image=image.ref if image is not None else None,
        registry_login=image.registry_login if image is not None else "",
        gpus=config.docker.gpus,
        nproc_per_node=nproc_per_node, nodes=nodes,
        environment=environment, setup=tuple(named.job.setup) if environment is not None else (),
    )


def job_nodes(app, named, value: int | None, *, no_docker: bool, docker_image: str | None) -> int:
    """--nodes (else the job's ``nodes``, else 1), checked before anything is built or
    uploaded: several machines need a .py script (each runs it under torchrun) and, for now,
    no Docker image."""
    nodes = value if value is not None else named.job.nodes or 1
    if nodes == 1:
        return 1
    if not named.script.endswith(".py"):
        raise UsageError(f"--nodes {nodes} runs a Python script under torchrun on each machine, but the job runs "
                         f"{named.script}; give it a .py script")
    if docker_image or (not no_docker and _finds_dockerfile(app)):
        raise UsageError(f"--nodes {nodes} runs without Docker for now; add --no-docker")
    return nodes


def _finds_dockerfile(app) -> bool:
    """Whether ``aws run`` would build the project's Dockerfile (``prepare_image``'s rule)."""
    from runctl.backends.docker import find_dockerfile

    config = app.config.docker
    return config.enabled is not False and find_dockerfile(_common.project_dir(), config.dockerfile) is not None


def refuse_nodes(named) -> None:
    """A job of several machines runs in a group of its own (aws run), not on one instance."""
    if (named.job.nodes or 1) > 1:
        raise UsageError(f"[jobs.{named.name}] nodes = {named.job.nodes} needs a group of that many instances; "
                         "run it with runctl aws run")


def instance_nproc(named, value: str | None) -> str | None:
    """--nproc-per-node of a job sent to an instance, checked before the code is uploaded: the
    script must be a .py file (torch is looked for on the instance, by its agent)."""
    from runctl.cli._torchrun import checked_nproc

    head = ("python", named.script) if named.script.endswith(".py") else (named.script,)
    return checked_nproc((*head, *named.args), value if value is not None else named.job.nproc_per_node,
                         torch_here=False)


def wait_and_report(app, job_store, sent: SentJob, *, timeout: float | None = None) -> int:
    """Follow a sent job to its end, report it, and return the exit code for it."""
    job_id, instance_id = sent.job_id, sent.instance_id
    app.output.note(f"runctl: job {job_id} sent to {instance_id}; following its output (Ctrl-C stops following, "
                    "not the job)")
    state, message = follow_job(app, job_store, instance_id, job_id, sent.assignment_id, sent.first_attempt,
                                timeout=timeout)
    if state == "timed-out":
        line = f"runctl: stopped waiting for job {job_id}: {message}"
    else:
        line = f"runctl: job {job_id} {state}" + (f": {message}" if message else "")
    warnings = ended_warnings(job_store, job_id, state)
    app.output.report({**sent.report, "state": state, "message": message, "warnings": list(warnings)},
                      lambda: app.output.note(line))
    show_warnings(app, warnings)
    return EXIT_BY_STATE.get(state, EXIT_JOB_FAILED)


def ended_warnings(store, job_id: str, state: str) -> tuple[str, ...]:
    """What the agent warned of when the job ended (e.g. no checkpoint in the store), as
    ``runctl run`` shows it; none while the job goes on."""
    from runctl.agent.status import read_status

    if state not in FINAL_STATES:
        return ()
    status = read_status(store, job_id)
    return status.warnings if status is not None else ()


def show_warnings(app, warnings) -> None:
    """After the job's last line, on stderr also with --output json: hard to miss."""
    for line in warnings:
        app.output.note(click.style(f"runctl: warning: {line}", fg="yellow", bold=True))


# -- the steps ------------------------------------------------------------------------------
def require_running(app, instance_id: str, region: str | None) -> None:
    """The instance must exist and run (CloudError otherwise, exit 3)."""
    try:
        from runctl.backends.instances import require_running as require
        from runctl.cli.aws._shared import compute
    except ImportError:  # the EC2 adapter is not there: ask EC2 directly
        _describe_running(instance_id, region or app.config.aws.region)
        return
    require(compute(app, region), instance_id)


def _describe_running(instance_id: str, region: str) -> None:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from runctl.errors import CloudError
    from runctl.errors.aws import cloud_error

    try:
        response = boto3.session.Session(region_name=region).client("ec2").describe_instances(
            InstanceIds=[instance_id])
    except (BotoCoreError, ClientError) as exc:
        raise cloud_error(exc, f"describe {instance_id}", instance_id=instance_id, region=region) from exc
    found = [i for r in response.get("Reservations", ()) for i in r.get("Instances", ())]
    if not found:
        raise CloudError(f"instance {instance_id} not found in {region}")
    state = found[0].get("State", {}).get("Name", "unknown")
    if state != "running":
        raise CloudError(f"instance {instance_id} is {state}, not running")


def _refuse_busy(store, instance_id: str, job_id: str):
    """One job at a time per instance; and a job runs on one agent at a time. Returns the
    instance's assignment judged free, with its version (or None), to assign over."""
    from runctl.agent.assignment import RUNNABLE, read_agent_record, read_assignment
    from runctl.agent.status import read_status

    found = read_assignment(store, instance_id)
    record = read_agent_record(store, instance_id)
    agent_alive = record is not None and time.time() - float(record.get("heartbeat") or 0) < AGENT_STALE_AFTER_S
    if found is not None and found[0].state in RUNNABLE and agent_alive:
        current = found[0].job_id
        what = f"already runs job {job_id}" if current == job_id else f"is busy with job {current}"
        raise UsageError(f"{instance_id} {what}; wait for it (runctl aws logs {current} -f) or use another instance")
    status = read_status(store, job_id)
    if status is not None and status.state not in FINAL_STATES and time.time() - (status.heartbeat or 0) < 30:
        raise UsageError(f"job {job_id} is running elsewhere (its agent beat {time.time() - status.heartbeat:.0f}s ago); "
                         "stop it or use another --job-id")
    return found


#: The agent moves one assignment on at most twice (running, then done or failed).
_AGENT_MOVES = 2


def _claim(store, instance_id: str, job_id: str, judged):
    """Assign ``job_id`` over the assignment ``_refuse_busy`` judged free. When it changed
    since (the code upload takes a while), the agent moving the same assignment on is judged
    again; a new assignment means another command won: PreconditionFailed (exit 3), for
    this command's input was fine, it lost a race on the store."""
    from runctl.agent.assignment import claim_instance, read_assignment
    from runctl.errors import PreconditionFailed

    for _ in range(_AGENT_MOVES + 1):
        try:
            return claim_instance(store, instance_id, job_id, judged=judged[1] if judged else None)
        except PreconditionFailed:
            now = read_assignment(store, instance_id)
            if not (judged and now and now[0].assignment_id == judged[0].assignment_id):
                break
            judged = _refuse_busy(store, instance_id, job_id)
    winner = now[0].job_id if now else None
    if winner is None:
        raise PreconditionFailed(f"the assignment of instance {instance_id} was removed by another command; "
                                 f"job {job_id} was not sent (run the command again)")
    raise PreconditionFailed(f"instance {instance_id} was just given job {winner} by another command; job {job_id} "
                             f"was not sent (wait for it: runctl aws logs {winner} -f, or use another instance)")


def prepare_code(app, store, named, sync_code: bool, includes: tuple[str, ...],
                 checkpoint_dir: str | None = None) -> tuple[tuple[str, ...], str | None]:
    """The job's argv (relative to the project root) and its uploaded code tree's id.
    ``named``: the ``Invocation`` of ``resolve_script``; ``checkpoint_dir``: the job's
    checkpoint folder in the project, whose files are not uploaded."""
    from runctl.cli._named import not_found_hint

    root = Path.cwd()
    script, args = named.script, named.args
    if not sync_code:
        head = ("python", script) if script.endswith(".py") else (script,)
        return (*head, *args), None
    path = Path(script)
    if not path.is_file():
        whose = f" (the script of [jobs.{named.name}])" if named.name else not_found_hint(app.config)
        raise UsageError(f"{script} is not a file in {root}{whose}; run runctl aws train from the project folder "
                         "(or use --no-sync-code for a script already on the instance)")
    rel = os.path.relpath(path.resolve(), root.resolve())
    if rel.startswith(".."):
        raise UsageError(f"{script} is outside the project folder {root}; run runctl aws train from a folder "
                         "that holds it")
    rel = rel.replace(os.sep, "/")
    from runctl.codesync import upload_tree

    result = upload_tree(store, root, includes, leave_out=checkpoint_dir, cache_dir=root / _common.STATE_DIR)
    from runctl.codesync import read_tree

    if rel not in {f.path for f in read_tree(store, result.tree_id).files}:
        raise UsageError(f"{rel} is ignored (.gitignore or .runctlignore), so it would not reach the instance; "
                         f"add --include {rel}")
    app.output.note(f"runctl: code: uploaded {result.uploaded_count} of {result.file_count} files "
                    f"({human_size(result.uploaded_bytes)} of {human_size(result.total_bytes)})")
    if result.skipped_links:
        links = result.skipped_links
        app.output.note(f"runctl: code: skipped {len(links)} symlink{'s' if len(links) > 1 else ''} that lead"
                        f"{'' if len(links) > 1 else 's'} out of the project (not uploaded): {', '.join(links)}")
    if rel.endswith(".py"):
        head = ("python", rel)
    else:
        head = (rel if "/" in rel else f"./{rel}",)
    return (*head, *args), result.tree_id


def _note_agent(app, store, instance_id: str) -> None:
    from runctl.agent.assignment import read_agent_record

    record = read_agent_record(store, instance_id)
    if record is None:
        app.output.note(f"runctl: the agent on {instance_id} has not reported yet (still booting?); "
                        "the job starts when it does")
    elif time.time() - float(record.get("heartbeat") or 0) > AGENT_STALE_AFTER_S:
        app.output.note(f"runctl: the agent on {instance_id} has not beaten for "
                        f"{time.time() - float(record['heartbeat']):.0f}s; the job starts when it is back")


# -- following a job ----------------------------------------------------------------------
def follow_job(app, store, instance_id: str, job_id: str, assignment_id: str, first_attempt: int, *,
               timeout: float | None = None, boot_timeout: float = BOOT_TIMEOUT_S, poll: float = 1.0,
               clock=time.monotonic, sleep=time.sleep) -> tuple[str, str]:
    """Print the job's new output until the agent finishes our assignment; (state, message).

    The state is the job's final state ("completed", "failed", "stopped", "interrupted"),
    "failed" with a message when the agent could not run it, "lost" when the agent stopped
    beating or never reported within ``boot_timeout`` seconds, "timed-out" after ``timeout``.
    """
    from runctl.agent.assignment import read_agent_record, read_assignment
    from runctl.agent.logs import LogFollower

    show_new = LogFollower(store, job_id, first_attempt, app.output.job_output)
    started = clock()
    deadline = started + timeout if timeout else None

    while True:
        found = read_assignment(store, instance_id)  # read before the logs: nothing is missed at the end
        show_new()
        if found is None or found[0].assignment_id != assignment_id:
            return "failed", f"the assignment on {instance_id} was replaced before job {job_id} ended"
        assignment = found[0]
        if assignment.state == "done":
            return assignment.job_state or "failed", _final_message(store, assignment.job_state, job_id)
        if assignment.state == "failed":
            return "failed", f"the agent on {instance_id} could not run it: {assignment.message}"
        record = read_agent_record(store, instance_id)
        if record is None and clock() - started > boot_timeout:
            return "lost", (f"the agent on {instance_id} never reported in {boot_timeout:.0f}s: its bootstrap "
                            "may have failed (see /var/log/cloud-init-output.log there, e.g. with runctl aws exec)")
        if record is not None and time.time() - float(record.get("heartbeat") or 0) > AGENT_STALE_AFTER_S:
            return "lost", (f"the agent on {instance_id} stopped beating (the instance may be gone); "
                              f"resume it on a new instance with runctl aws run SCRIPT --job-id {job_id}")
        if deadline is not None and clock() >= deadline:
            return "timed-out", (f"timed out after {timeout:g}s; it goes on on {instance_id}: "
                                 f"runctl aws logs {job_id} -f")
        sleep(poll)


def _final_message(store, state: str | None, job_id: str) -> str:
    from runctl.agent.status import read_status

    if state == "interrupted":
        return (f"the instance is being reclaimed; resume from the latest snapshot with "
                f"runctl aws run SCRIPT --job-id {job_id}")
    status = read_status(store, job_id)
    return status.message if status is not None and state != "completed" else ""
