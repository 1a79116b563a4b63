"""The documentation cannot drift from the command line.

- Every fenced block whose info string is ``bash runnable`` in README.md, docs/*.md and
  training/examples/README.md is run by bash (``-euo pipefail``) in a fresh copy of the
  repository, with this interpreter's runctl first on PATH, and must exit 0. A block marked
  ``bash runnable fake-cloud`` runs inside ``python -m runctl.testing.cloud``: moto for
  EC2/S3, a metadata emulator and an agent process per instance; nothing may be left running.
- A block runs only where what it needs is here, and is skipped with the reason otherwise:
  ``needs=serve,curl`` in its info string names extras of pyproject.toml (``NEEDS_EXTRA``:
  the modules each must make importable) and programs (``NEEDS_PROGRAM``: on PATH);
  ``fake-cloud`` needs the fake-cloud extra. An unknown marker or need fails the test.
- Every ``runctl ...`` command in any bash block, runnable or not, names a command that
  exists and passes only options it has, with valid values.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")),
        REPO_ROOT / "training" / "examples" / "README.md"]
FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<info>.*)$")
SHELLS = {"bash", "sh", "shell", "console"}
BLOCK_TIMEOUT_S = 300
#: What ``needs=EXTRA`` asks for: the top-level modules the extra of pyproject.toml installs.
NEEDS_EXTRA = {
    "fake-cloud": ("moto", "flask", "flask_cors"),  # moto[server]
    "serve": ("fastapi", "uvicorn"),
    "torch": ("torch",),
    "examples": ("torch", "fastapi", "uvicorn", "pytorch_lightning", "transformers", "accelerate"),
}
#: What ``needs=PROGRAM`` may name: a program that must be on PATH.
NEEDS_PROGRAM = {"curl", "docker", "git"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    info: tuple[str, ...]
    text: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.info[:2] == ("bash", "runnable")

    @property
    def fake_cloud(self) -> bool:
        return "fake-cloud" in self.info[2:]

    @property
    def needs(self) -> tuple[str, ...]:
        """The extras and programs it needs: its ``needs=`` markers, the fake cloud's extra."""
        listed = [need for marker in self.info[2:] if marker.startswith("needs=")
                  for need in marker.removeprefix("needs=").split(",")]
        return (*(["fake-cloud"] if self.fake_cloud else []), *listed)


def missing_needs(needs: tuple[str, ...]) -> list[str]:
    """Why each of ``needs`` is not met here (none: the block can run)."""
    missing = []
    for need in needs:
        if need in NEEDS_EXTRA:
            absent = [m for m in NEEDS_EXTRA[need] if importlib.util.find_spec(m) is None]
            if absent:
                missing.append(f"the {need} extra ({', '.join(absent)} not installed; pip install -e '.[{need}]')")
        elif shutil.which(need) is None:
            missing.append(f"{need} (not on PATH)")
    return missing


def fenced_blocks(path: Path) -> list[Block]:
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, body, start = opening["fence"], [], i + 1
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # past the closing fence
        blocks.append(Block(path, start, tuple(opening["info"].split()), "\n".join(body) + "\n"))
    return blocks


ALL_BLOCKS = [block for path in DOCS if path.exists() for block in fenced_blocks(path)]
RUNNABLE = [block for block in ALL_BLOCKS if block.runnable]
SHELL_BLOCKS = [block for block in ALL_BLOCKS if block.info[:1] and block.info[0] in SHELLS]


def test_the_docs_have_runnable_blocks_and_every_marker_is_known():
    assert len(RUNNABLE) >= 5, [b.name for b in RUNNABLE]
    for block in RUNNABLE:
        for marker in block.info[2:]:
            assert marker == "fake-cloud" or marker.startswith("needs="), \
                f"{block.name}: unknown marker {marker!r} in {' '.join(block.info)}"
        for need in block.needs:
            assert need in NEEDS_EXTRA or need in NEEDS_PROGRAM, \
                f"{block.name}: unknown need {need!r}; an extra of {sorted(NEEDS_EXTRA)} or a program of {sorted(NEEDS_PROGRAM)}"


def test_a_need_missing_here_is_named_with_how_to_install_it(monkeypatch):
    monkeypatch.setitem(NEEDS_EXTRA, "serve", ("json", "no_such_module_for_runctl_tests"))
    monkeypatch.setenv("PATH", "")
    assert missing_needs(("serve", "curl")) == [
        "the serve extra (no_such_module_for_runctl_tests not installed; pip install -e '.[serve]')",
        "curl (not on PATH)"]
    assert missing_needs(()) == []


# -- runnable blocks -----------------------------------------------------------------------------

def copy_of_repository(dest: Path) -> Path:
    """The files a fresh clone has (plus files not yet committed), without local state."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, check=True).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        source = REPO_ROOT / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)
    return dest


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_runnable_block(block: Block, tmp_path: Path, cli_env: dict[str, str]):
    if missing := missing_needs(block.needs):
        pytest.skip(f"{block.name} needs {'; '.join(missing)}")
    workdir = copy_of_repository(tmp_path / "repo")
    env = {k: v for k, v in cli_env.items() if not k.startswith("AWS_")}
    env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               HOME=str(tmp_path / "home"), COLUMNS="200")
    command = ["bash", "-euo", "pipefail", "-c", block.text]
    if block.fake_cloud:
        command = [sys.executable, "-m", "runctl.testing.cloud", "--workdir", str(tmp_path / "cloud"), "--", *command]
    code, stdout, stderr = run_in_own_group(command, workdir, env, tmp_path)
    transcript = f"{block.name}:\n{block.text}\n--- stdout\n{stdout[-4000:]}\n--- stderr\n{stderr[-4000:]}"
    assert code == 0, transcript
    assert "Traceback" not in stderr, transcript
    assert "fake-cloud: left running" not in stderr, transcript


def run_in_own_group(command: list[str], cwd: Path, env: dict[str, str], tmp_path: Path) -> tuple[int, str, str]:
    """Run ``command`` in a process group of its own, output to files (a server a failed
    block left in the background must not hold our pipes open), and kill what it left."""
    out, err = tmp_path / "block.stdout", tmp_path / "block.stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            code = proc.wait(timeout=BLOCK_TIMEOUT_S)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return code, out.read_text(errors="replace"), err.read_text(errors="replace")


# -- every runctl command in the docs exists -------------------------------------------------------

OPERATORS = {"&&", "||", "|", ";", "&", "(", ")", "$(", "`", ">", ">>", "<", "2>", "2>&1"}


def runctl_commands(text: str) -> list[list[str]]:
    """The argument lists of the runctl invocations in a shell block."""
    text = re.sub(r"\\\n", " ", text)
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("$ "):  # a console transcript
            line = line[2:]
        lexer = shlex.shlex(line, posix=True, punctuation_chars="();&|<>`")
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:  # an unbalanced quote: prose, not a command
            continue
        for i, token in enumerate(tokens):
            if (token == "runctl" or token.endswith("/runctl") and "://" not in token) and command_position(tokens, i):
                args = []
                for arg in tokens[i + 1:]:
                    if arg in OPERATORS or set(arg) <= set("();&|<>`"):
                        break
                    args.append(arg)
                commands.append(args)
    return commands


def command_position(tokens: list[str], i: int) -> bool:
    """Whether tokens[i] is where a command stands: first, after an operator or after
    variable assignments (``FOO=1 runctl ...``)."""
    j = i - 1
    while j >= 0 and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[j]) and not tokens[j].endswith("$"):
        j -= 1
    return j < 0 or tokens[j] in OPERATORS or set(tokens[j]) <= set("();&|<>`") or tokens[j].endswith("=$")


def check_command_line(args: list[str]) -> None:
    """Parse ``args`` as runctl would, down to the subcommand, without running anything."""
    from runctl.cli import cli

    if {"--help", "-h", "--version"} & set(args):
        args = [a for a in args if a not in ("--help", "-h", "--version")]
        command, ctx = cli, None
        for name in args:
            if not isinstance(command, click.Group) or name.startswith("-"):
                break
            ctx = click.Context(command, parent=ctx)
            found = command.get_command(ctx, name)
            assert found is not None, f"no command {name!r}"
            command = found
        return
    ctx = cli.make_context("runctl", list(args))
    command, parent = cli, ctx
    rest = unparsed(ctx)
    while isinstance(command, click.Group) and rest:
        name, command, rest = command.resolve_command(parent, rest)
        parent = command.make_context(name, rest, parent=parent)
        rest = unparsed(parent) if isinstance(command, click.Group) else []


def unparsed(ctx: click.Context) -> list[str]:
    """What a group left for its subcommand (click 8.2 renamed protected_args)."""
    protected = getattr(ctx, "_protected_args", None)
    return [*(ctx.protected_args if protected is None else protected), *ctx.args]


DOCUMENTED = [(block, args) for block in SHELL_BLOCKS for args in runctl_commands(block.text)]


def test_the_docs_show_runctl_commands():
    assert len(DOCUMENTED) >= 20


@pytest.mark.parametrize("block,args", DOCUMENTED, ids=[f"{b.name}:{' '.join(a)[:60]}" for b, a in DOCUMENTED])
def test_documented_command_parses(block: Block, args: list[str], monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    try:
        check_command_line(args)
    except click.ClickException as exc:
        pytest.fail(f"{block.name}: `runctl {shlex.join(args)}`: {exc.format_message()}")
