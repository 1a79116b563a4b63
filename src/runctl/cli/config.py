"""``runctl config show|validate``: the effective configuration and where it came from."""

from __future__ import annotations

import click

from runctl.cli._context import App, output_option, pass_app
from runctl.errors import ConfigError


@click.group("config")
def config() -> None:
    """Show or validate the effective configuration."""


@config.command("show")
@output_option
@pass_app
def show(app: App) -> None:
    """Print every key's effective value and where it came from (file:line, env or default)."""
    from runctl.config import toml_value

    cfg = app.config
    values = {**cfg.values(), **cfg.job_values()}
    source = str(cfg.source_path) if cfg.source_path else None
    data = {
        "source": source,
        "values": {key: {"value": value, "origin": cfg.origins[key]} for key, value in values.items()},
    }

    def text() -> None:
        rows = [(key, toml_value(value), cfg.origins[key]) for key, value in values.items()]
        title = f"configuration from {source}" if source else "configuration (no config file: defaults)"
        app.output.table(["key", "value", "origin"], rows, title=title)

    app.output.report(data, text)


@config.command("validate")
@output_option
@pass_app
def validate(app: App) -> None:
    """Load the configuration; print "ok: PATH" or the error (exit code 2)."""
    try:
        cfg = app.config
    except ConfigError as exc:
        app.output.report({"ok": False, "source": None, "error": str(exc)}, lambda: app.output.error(str(exc)))
        click.get_current_context().exit(exc.exit_code)
    source = str(cfg.source_path) if cfg.source_path else None
    app.output.report(
        {"ok": True, "source": source, "error": None},
        lambda: app.output.line(f"ok: {source or '(no config file; defaults)'}"),
    )
