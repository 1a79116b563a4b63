"""The job-command argument convention.

``runctl <command> [OPTIONS] SCRIPT [OPTIONS] [-- SCRIPT_ARGS...]``: runctl's options may
stand before or after the script, everything after the first ``--`` goes to the script
untouched, and anything else after the script is an error that says to use ``--``.
"""

from __future__ import annotations

import click

SCRIPT_ARGS_KEY = "runctl.script_args"


class ScriptCommand(click.Command):
    """A command taking one SCRIPT argument plus script arguments after ``--``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            args, ctx.meta[SCRIPT_ARGS_KEY] = args[:cut], tuple(args[cut + 1 :])
        else:
            ctx.meta[SCRIPT_ARGS_KEY] = ()
        try:
            rest = super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            exc.message += " (runctl's own options go before '--'; put the script's arguments after it)"
            raise
        stray = ctx.params.pop("stray_args", ())
        if stray:
            raise click.UsageError(
                f"unexpected argument {stray[0]!r} after the script; put the script's "
                f"arguments after '--', e.g. runctl {ctx.info_name} SCRIPT -- {stray[0]}",
                ctx,
            )
        return rest


def script_command(**kwargs):
    """Decorator: a ``ScriptCommand`` with the SCRIPT argument already declared."""

    def decorate(func):
        func = click.argument("stray_args", nargs=-1, required=False, metavar="")(func)
        func = click.argument("script", metavar="SCRIPT")(func)
        return click.command(cls=ScriptCommand, **kwargs)(func)

    return decorate


def script_args(ctx: click.Context | None = None) -> tuple[str, ...]:
    """The arguments the user gave after ``--``, exactly as given."""
    ctx = ctx or click.get_current_context()
    return ctx.meta.get(SCRIPT_ARGS_KEY, ())  # meta is shared by nested contexts
