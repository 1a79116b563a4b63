"""The job-command argument convention.

``runctl <command> [OPTIONS] SCRIPT [OPTIONS] [-- SCRIPT_ARGS...]``: runctl's options may
stand before or after the script, everything after the first ``--`` goes to the script
untouched, and anything else after the script is an error that says to use ``--``.
"""

from __future__ import annotations

import shlex

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
            rest = super().parse_args(ctx, list(args))  # click consumes the list it is given
        except click.NoSuchOption as exc:
            exc.message += " (runctl's own options go before '--'; put the script's arguments after it"
            corrected = self._corrected(ctx, args, exc.option_name)
            exc.message += f": {corrected})" if corrected else ")"
            raise
        stray = ctx.params.pop("stray_args", ())
        if stray:
            raise click.UsageError(
                f"unexpected argument {stray[0]!r} after the script; put the script's "
                f"arguments after '--', e.g. runctl {ctx.info_name} SCRIPT -- {stray[0]}",
                ctx,
            )
        return rest

    def _corrected(self, ctx: click.Context, args: list[str], unknown: str) -> str | None:
        """The command line with the script's arguments moved after ``--``: runctl's own
        options (with their values) and the script stay before it, everything else from the
        unknown option on goes after it, in order. None when the unknown option stands
        before the script (then it is not the script's)."""
        takes_value = {name: not (isinstance(p, click.Option) and (p.is_flag or p.count))
                       for p in self.get_params(ctx) for name in (*p.opts, *p.secondary_opts)}
        ours: list[str] = []
        theirs: list[str] = []
        script_seen = False
        rest = iter(args)
        for arg in rest:
            name = arg.split("=", 1)[0]
            if name in takes_value:
                ours.append(arg)
                if takes_value[name] and "=" not in arg:
                    ours.extend(value for value in [next(rest, None)] if value is not None)
            elif not script_seen and not arg.startswith("-"):
                ours.append(arg)
                script_seen = True
            elif not script_seen:
                return None
            else:
                theirs.append(arg)
        return shlex.join([*ctx.command_path.split(), *ours, "--", *theirs, *script_args(ctx)])


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
