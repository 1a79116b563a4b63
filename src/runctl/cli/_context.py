"""What every command receives: the global options, the configuration, the output."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import click

from runctl.cli._output import FORMATS, Output


@dataclass
class App:
    config_path: Path | None = None
    output: Output = field(default_factory=Output)

    @functools.cached_property
    def config(self):
        """The effective configuration, loaded on first use (commands that need none skip it)."""
        from runctl.config import load_config

        return load_config(explicit=self.config_path)


pass_app = click.make_pass_decorator(App, ensure=True)


def output_option(func):
    """``--output text|json`` on a subcommand; the same as the global option, placed later."""

    def remember(ctx: click.Context, _param, value):
        if value is not None:
            ctx.ensure_object(App).output.format = value
        return value

    return click.option(
        "--output",
        "-o",
        type=click.Choice(FORMATS),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=remember,
        help="text for people, json for programs.",
    )(func)
