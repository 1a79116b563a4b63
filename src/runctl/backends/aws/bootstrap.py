"""The user-data bootstrap of a runctl instance: install the CLI's runctl, start the agent.

``render_user_data(...)`` is pure: it returns a bash script (``set -euo pipefail``) that

1. finds a Python >= 3.10 with venv, installing one with dnf, yum or apt-get if there is none;
2. makes a venv at ``/opt/runctl/venv``;
3. fetches the runctl wheel, checks its sha256 and pip-installs it (its dependencies come
   from PyPI): an ``s3://`` wheel with boto3 and the instance role, any other URL (a
   presigned https URL, file://) with curl, else Python;
4. writes ``/opt/runctl/run-agent`` (``exec env ... AGENT_COMMAND >> /var/log/runctl-agent.log``)
   and starts it detached: as the systemd unit ``runctl-agent`` where systemd runs, else nohup.

No credential appears in it: the agent reaches the store with the instance role, and
``bootstrap_user_data`` gives an S3 store's wheel as its ``s3://`` location, read with that
role too. (A presigned URL would carry the access key id, with temporary credentials their
session token, and would stop working after its expiry or the session's; it is used only
when asked for, ``presign=True``: a time-limited read of that one object.)

Every value from outside is interpolated once, shell-quoted with ``shlex.quote``, in the
block between ``# --- runctl: values ---`` and ``# --- runctl: end of values ---``; the rest
of the script is constant. The agent command is the bash array on the line starting with
``RUNCTL_AGENT_COMMAND=(``: its first element is the interpreter, so a harness can run the
same command with its own Python (``agent_command_from_user_data(text, python=...)``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from runctl.errors import UsageError

PREFIX = "/opt/runctl"
AGENT_LOG = "/var/log/runctl-agent.log"
AGENT_MODULE = "runctl.agent.resident"
WATCHDOG_MODULE = "runctl.agent.boot_watchdog"
COMMAND_VAR = "RUNCTL_AGENT_COMMAND"
WATCHDOG_VAR = "RUNCTL_WATCHDOG_COMMAND"
ENV_VAR = "RUNCTL_AGENT_ENV"
VALUES_BEGIN = "# --- runctl: values ---"
VALUES_END = "# --- runctl: end of values ---"
DEFAULT_STORE_PREFIX = "runctl"

#: Names that would put a credential into the user data: refused.
_CREDENTIAL_NAMES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"}
_CREDENTIAL_WORDS = ("SECRET", "PASSWORD", "TOKEN", "CREDENTIAL")
_SAFE_PATH = re.compile(r"^(/[A-Za-z0-9_.-]+)+/?\Z")  # it goes into a systemd unit too
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")

# One word as shlex.quote writes it: bare safe characters, or '...' pieces joined by "'".
_WORD = r"""(?:'[^']*'|"'"|[\w@%+=:,./-])+"""
_ARRAY = r"^{name}=\(((?:{word}(?:[ ]{word})*)?)\)[ ]*$"


def store_url_for(bucket: str | None, explicit: str | None = None, configured: str | None = None) -> str:
    """The store of ``runctl aws ...`` (the same rule as ``aws create``): ``explicit``, else
    ``configured`` ([checkpoint] store) when it is an s3:// URL, else ``s3://<bucket>/runctl``."""
    if explicit:
        return explicit
    if configured and configured.startswith("s3://"):
        return configured
    if not bucket:
        raise UsageError("no store for AWS jobs: set [aws] s3_bucket in .runctl.toml or give --store s3://BUCKET/PREFIX")
    return f"s3://{bucket}/{DEFAULT_STORE_PREFIX}"


def agent_command(store_url: str, *, region: str | None = None, python: str = f"{PREFIX}/venv/bin/python",
                  spot_notices: bool | None = None, instance_id: str | None = None, job: str | None = None,
                  idle_timeout_s: float | None = None) -> list[str]:
    """The resident agent's argv; the interpreter first. ``job``: the agent of a job's group."""
    argv = [python, "-m", AGENT_MODULE, "--store", store_url]
    if region:
        argv += ["--region", region]
    if instance_id:
        argv += ["--instance-id", instance_id]
    if spot_notices is not None:
        argv.append("--spot-notices" if spot_notices else "--no-spot-notices")
    if job:
        argv += ["--job", job]
    if idle_timeout_s is not None:
        argv += ["--idle-timeout", f"{idle_timeout_s:g}"]
    return argv


def watchdog_command(store_url: str, job: str, *, region: str | None = None,
                     python: str = f"{PREFIX}/venv/bin/python") -> list[str]:
    """The boot watchdog's argv (``runctl.agent.boot_watchdog``); the interpreter first."""
    argv = [python, "-m", WATCHDOG_MODULE, "--store", store_url, "--job", job]
    return argv + (["--region", region] if region else [])


def _check_env(env: Mapping[str, str]) -> None:
    for name in env:
        if not _ENV_NAME.match(name):
            raise UsageError(f"invalid environment variable name {name!r} for the instance's agent")
        upper = name.upper()
        if upper in _CREDENTIAL_NAMES or any(word in upper for word in _CREDENTIAL_WORDS):
            raise UsageError(f"refusing to put {name} into the instance's user data: credentials must come "
                             "from the instance role, and user data is readable by anyone who can describe the instance")


def _check_value(what: str, value: str) -> str:
    if "\0" in value:
        raise UsageError(f"{what} contains a NUL character")
    return value


def _array(name: str, values: Sequence[str]) -> str:
    return f"{name}=(" + " ".join(shlex.quote(v) for v in values) + ")"


def _wheel_filename(url: str) -> str:
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    if not name.endswith(".whl"):
        raise UsageError(f"the wheel URL {url!r} does not end in a .whl file name; give wheel_filename")
    return name


def render_user_data(*, wheel_url: str, store_url: str, region: str | None = None,
                     wheel_sha256: str | None = None, wheel_filename: str | None = None,
                     spot_notices: bool | None = None, env: Mapping[str, str] | None = None,
                     prefix: str = PREFIX, agent_log: str = AGENT_LOG, service: str = "auto",
                     job: str | None = None, boot_timeout_s: float | None = None,
                     idle_timeout_s: float | None = None) -> str:
    """The bash user-data script described in the module docstring. Pure.

    ``env``: extra environment of the agent (no credentials: refused). ``spot_notices``:
    None lets the agent find out whether it runs on spot. ``service``: how the agent is
    started: ``auto`` (systemd where it runs, else nohup), ``systemd`` or ``nohup``.
    ``prefix``, ``agent_log`` and ``service`` let tests run the script on this machine.
    ``job``: an instance of that job's group, whose agent runs the job and ends the instance;
    ``boot_timeout_s`` then arms the boot watchdog. ``idle_timeout_s``: an ``aws create``
    instance's agent shuts it down after that long without a job.
    """
    if service not in ("auto", "systemd", "nohup"):
        raise UsageError(f"unknown service kind {service!r}: auto, systemd or nohup")
    env = dict(env or {})
    _check_env(env)
    if not _SAFE_PATH.match(prefix):
        raise UsageError(f"install prefix {prefix!r} must be an absolute path of letters, digits, '_', '.', '-'")
    filename = wheel_filename or _wheel_filename(wheel_url)
    python = f"{prefix.rstrip('/')}/venv/bin/python"
    command = agent_command(store_url, region=region, python=python, spot_notices=spot_notices, job=job,
                            idle_timeout_s=idle_timeout_s)
    watchdog = watchdog_command(store_url, job, region=region, python=python) if job and boot_timeout_s else []
    values = {
        "RUNCTL_PREFIX": prefix,
        "RUNCTL_AGENT_LOG": agent_log,
        "RUNCTL_WHEEL_URL": wheel_url,
        "RUNCTL_WHEEL_FILE": filename,
        "RUNCTL_WHEEL_SHA256": wheel_sha256 or "",
        "RUNCTL_SERVICE": service,
        "RUNCTL_REGION": region or "",
        "RUNCTL_BOOT_TIMEOUT": f"{int(boot_timeout_s)}" if watchdog else "",
    }
    for what, value in [*values.items(), *env.items(), ("the agent command", "".join(command + watchdog))]:
        _check_value(what, value)
    lines = [VALUES_BEGIN]
    lines += [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    lines.append(_array(ENV_VAR, [f"{name}={value}" for name, value in sorted(env.items())]))
    lines.append("# The resident agent's command; its first word is the interpreter.")
    lines.append(_array(COMMAND_VAR, command))
    lines.append("# The boot watchdog's command (empty: none), run RUNCTL_BOOT_TIMEOUT s after the install.")
    lines.append(_array(WATCHDOG_VAR, watchdog))
    lines.append(VALUES_END)
    return _HEAD + "\n".join(lines) + "\n" + _BODY.replace("__S3_FETCH__", shlex.quote(S3_FETCH), 1)


def _values_block(text: str) -> str:
    start, end = text.find(VALUES_BEGIN), text.find(VALUES_END)
    if start < 0 or end < start:
        raise UsageError("not a runctl user-data script: its values block is missing")
    return text[start + len(VALUES_BEGIN):end]


def _parse_array(text: str, name: str) -> list[str]:
    match = re.search(_ARRAY.format(name=re.escape(name), word=_WORD), _values_block(text), re.MULTILINE | re.ASCII)
    if match is None:
        raise UsageError(f"not a runctl user-data script: no {name}=(...) line")
    return shlex.split(match.group(1))


def agent_command_from_user_data(text: str, *, python: str | None = None) -> list[str]:
    """The agent's argv from a user-data script, as bash would see it. ``python`` replaces
    the interpreter (the first element), e.g. with ``sys.executable`` in a test harness."""
    argv = _parse_array(text, COMMAND_VAR)
    if python is not None:
        argv[0] = python
    return argv


def watchdog_from_user_data(text: str, *, python: str | None = None) -> tuple[list[str], float | None]:
    """The boot watchdog's argv and its timeout in seconds; ([], None) when none is armed."""
    argv = _parse_array(text, WATCHDOG_VAR) if f"{WATCHDOG_VAR}=(" in text else []
    match = re.search(r"^RUNCTL_BOOT_TIMEOUT=(\d+)$", _values_block(text), re.MULTILINE)
    if not argv or match is None:
        return [], None
    if python is not None:
        argv[0] = python
    return argv, float(match.group(1))


def agent_env_from_user_data(text: str) -> dict[str, str]:
    """The extra environment the user data gives the agent."""
    return dict(item.split("=", 1) for item in _parse_array(text, ENV_VAR))


def bootstrap_user_data(store, *, region: str | None = None, spot_notices: bool | None = None,
                        env: Mapping[str, str] | None = None, presign: bool = False,
                        expires_s: int | None = None, job: str | None = None, boot_timeout_s: float | None = None,
                        idle_timeout_s: float | None = None) -> str:
    """Publish the CLI's wheel in ``store`` (once) and render the user data that installs it
    and starts an agent on that store. An S3 store's wheel is fetched with the instance
    role unless ``presign`` (then a URL that works ``expires_s``, default 12 h); another
    store's with the URL it gives (file://)."""
    from runctl.backends.aws.wheel import DEFAULT_URL_EXPIRY_S, publish_wheel

    wheel = publish_wheel(store, expires_s=expires_s or DEFAULT_URL_EXPIRY_S)
    url = wheel.url
    if store.url.startswith("s3://") and not presign:
        url = f"{store.url.rstrip('/')}/{wheel.key}"
    return render_user_data(wheel_url=url, wheel_sha256=wheel.sha256, wheel_filename=wheel.filename,
                            store_url=store.url, region=region, spot_notices=spot_notices, env=env, job=job,
                            boot_timeout_s=boot_timeout_s, idle_timeout_s=idle_timeout_s)


#: Downloads s3://BUCKET/KEY (argv[1]) to a file (argv[2]) with the instance role.
S3_FETCH = (
    "import sys, boto3\n"
    "bucket, _, key = sys.argv[1][len('s3://'):].partition('/')\n"
    "boto3.client('s3').download_file(bucket, key, sys.argv[2])\n"
)

_HEAD = """\
#!/bin/bash
# runctl bootstrap: install runctl (the same version as the CLI that launched this
# instance) and start its resident agent. No credentials here: the wheel and the job
# store are read with the instance role (or the wheel from a time-limited URL).
set -euo pipefail
"""

_BODY = r"""
say() { echo "runctl-bootstrap: $*" >&2; }
S3_FETCH=__S3_FETCH__

if [ -n "$RUNCTL_BOOT_TIMEOUT" ] && command -v shutdown >/dev/null 2>&1; then
  # Should runctl never install (so no watchdog runs), the machine still goes, later than
  # the watchdog would; the watchdog cancels this once the agent has started.
  shutdown -h "+$(( RUNCTL_BOOT_TIMEOUT / 60 + 10 ))" "runctl: the bootstrap did not finish" || true
fi

find_python() {
  local candidate
  for candidate in python3.13 python3.12 python3.11 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

PYTHON=$(find_python || true)
if [ -z "$PYTHON" ]; then
  say "installing Python 3"
  if command -v dnf >/dev/null 2>&1; then
    dnf install -y python3.11 python3.11-pip || dnf install -y python3 python3-pip
  elif command -v yum >/dev/null 2>&1; then
    yum install -y python3.11 || yum install -y python3 python3-pip
  elif command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -y
    apt-get install -y python3 python3-venv python3-pip
  fi
  PYTHON=$(find_python) || { say "no Python >= 3.10 with venv found or installable"; exit 1; }
fi
say "using $PYTHON"

mkdir -p "$RUNCTL_PREFIX"
"$PYTHON" -m venv "$RUNCTL_PREFIX/venv"
VENV_PYTHON="$RUNCTL_PREFIX/venv/bin/python"
if [ -n "$RUNCTL_REGION" ]; then
  export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$RUNCTL_REGION}"
fi
WHEEL="$RUNCTL_PREFIX/$RUNCTL_WHEEL_FILE"
case "$RUNCTL_WHEEL_URL" in
  s3://*)
    # Read with the instance role: boto3 first (runctl needs it anyway).
    "$VENV_PYTHON" -m pip install --disable-pip-version-check --quiet boto3
    "$VENV_PYTHON" -c "$S3_FETCH" "$RUNCTL_WHEEL_URL" "$WHEEL"
    ;;
  *)
    if command -v curl >/dev/null 2>&1; then
      curl -fsSL --retry 5 --retry-delay 2 -o "$WHEEL" "$RUNCTL_WHEEL_URL"
    else
      "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
        "$RUNCTL_WHEEL_URL" "$WHEEL"
    fi
    ;;
esac
if [ -n "$RUNCTL_WHEEL_SHA256" ]; then
  GOT=$("$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$WHEEL")
  if [ "$GOT" != "$RUNCTL_WHEEL_SHA256" ]; then
    say "the downloaded wheel's sha256 is $GOT, expected $RUNCTL_WHEEL_SHA256"
    exit 1
  fi
fi

"$VENV_PYTHON" -m pip install --disable-pip-version-check --quiet "$WHEEL"

mkdir -p "$(dirname "$RUNCTL_AGENT_LOG")"
{
  echo '#!/bin/bash'
  echo '# The runctl resident agent (written by the runctl bootstrap).'
  printf 'exec env'
  printf ' %q' ${RUNCTL_AGENT_ENV[@]+"${RUNCTL_AGENT_ENV[@]}"} "${RUNCTL_AGENT_COMMAND[@]}"
  printf ' >>%q 2>&1\n' "$RUNCTL_AGENT_LOG"
} > "$RUNCTL_PREFIX/run-agent"
chmod 755 "$RUNCTL_PREFIX/run-agent"

USE_SYSTEMD=no
if [ "$RUNCTL_SERVICE" = systemd ] || { [ "$RUNCTL_SERVICE" = auto ] && [ -d /run/systemd/system ] &&
   command -v systemctl >/dev/null 2>&1; }; then
  USE_SYSTEMD=yes
fi

if [ ${#RUNCTL_WATCHDOG_COMMAND[@]} -gt 0 ]; then
  # The boot watchdog: when the agent has not reported by then, this machine is counted as
  # a boot failure of the job and shut down (see runctl.agent.boot_watchdog).
  if [ "$USE_SYSTEMD" = yes ]; then
    systemd-run --unit=runctl-boot-watchdog --on-active="${RUNCTL_BOOT_TIMEOUT}s" "${RUNCTL_WATCHDOG_COMMAND[@]}"
  else
    nohup setsid sh -c 'sleep "$1"; shift; exec "$@"' sh "$RUNCTL_BOOT_TIMEOUT" "${RUNCTL_WATCHDOG_COMMAND[@]}" \
      </dev/null >>"$RUNCTL_AGENT_LOG" 2>&1 &
  fi
  say "boot watchdog armed: ${RUNCTL_BOOT_TIMEOUT}s"
fi

if [ "$USE_SYSTEMD" = yes ]; then
  cat > /etc/systemd/system/runctl-agent.service <<UNIT
[Unit]
Description=runctl resident agent
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=$RUNCTL_PREFIX/run-agent
Restart=on-failure
RestartSec=5
# SIGTERM to the agent only: it stops the job's process group itself, then uploads.
KillMode=mixed
TimeoutStopSec=150

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable runctl-agent.service
  systemctl start --no-block runctl-agent.service
  say "started the runctl-agent service; its log is $RUNCTL_AGENT_LOG"
else
  nohup setsid "$RUNCTL_PREFIX/run-agent" </dev/null >/dev/null 2>&1 &
  say "started the agent (pid $!); its log is $RUNCTL_AGENT_LOG"
fi
"""
