"""``runctl init``: write a commented ``.runctl.toml`` template."""

from __future__ import annotations

from pathlib import Path

import click

from runctl.cli._context import App, output_option, pass_app
from runctl.errors import UsageError


@click.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--path", "path", type=click.Path(path_type=Path), default=None,
              help="Where to write (default: ./.runctl.toml; a folder means FOLDER/.runctl.toml).")
@output_option
@pass_app
def init(app: App, force: bool, path: Path | None) -> None:
    """Write a commented .runctl.toml template showing every key and its default."""
    from runctl.config import CONFIG_FILENAME, render_template

    target = (path or Path(CONFIG_FILENAME)).absolute()
    if target.is_dir():
        target = target / CONFIG_FILENAME
    try:
        with open(target, "w" if force else "x", encoding="utf-8") as fh:
            fh.write(render_template())
    except FileExistsError:
        raise UsageError(f"{target} already exists; use --force to overwrite it") from None
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    app.output.report({"path": str(target)}, lambda: app.output.line(f"wrote {target}"))
