"""runctl's command line: thin click commands that call the library and render its results.

Only this package prints. Subcommands are imported lazily (see ``_lazy``), so that
``runctl --help`` and every command answer at once.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from runctl import __version__
from runctl.cli._context import App
from runctl.cli._lazy import LazyGroup
from runctl.cli._output import FORMATS, Output
from runctl.errors import EXIT_INTERRUPTED, EXIT_USAGE, RunctlError

COMMANDS = {
    "init": ("runctl.cli.init:init", "Write a commented .runctl.toml template."),
    "config": ("runctl.cli.config:config", "Show or validate the effective configuration."),
    "checkpoint": ("runctl.cli.checkpoint:checkpoint", "List, inspect, verify and prune checkpoint snapshots."),
    "run": ("runctl.cli.run:run", "Run a script locally under the agent; resume it from the store."),
    "status": ("runctl.cli.status:status", "Show a job's state, attempts and latest interruption notice."),
    "jobs": ("runctl.cli.jobs:jobs", "List the jobs in the store."),
    "logs": ("runctl.cli.logs:logs", "Print (or follow) a job's logs from the store."),
    "aws": ("runctl.cli.aws:aws", "Run training on EC2 instances, spot or on-demand."),
    "docker": ("runctl.cli.docker:docker", "Build the project's image and push it (ECR or [docker] registry)."),
    "s3": ("runctl.cli.s3:s3", "Upload, download, sync, list and clean up S3 objects."),
    "workflow": ("runctl.cli.workflow:workflow", "Multi-step recipes: workflow train runs a job on AWS to its end."),
    "resources": ("runctl.cli.resources:resources", "List or clean up what runctl launched on AWS (tagged)."),
}

EPILOG = """\b
Exit codes: 0 success, 1 the job failed, 2 usage or configuration error,
3 cloud, store or registry error, 130 stopped by the user.
Job commands: runctl COMMAND [OPTIONS] SCRIPT [OPTIONS] [-- SCRIPT_ARGS...]"""


@click.group(
    cls=LazyGroup,
    lazy_subcommands=COMMANDS,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="runctl")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Configuration file (default: RUNCTL_CONFIG, then .runctl.toml up to the repository root).")
@click.option("--output", "-o", "output_format", type=click.Choice(FORMATS), default="text",
              help="text for people, json for programs.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, output_format: str, verbose: int) -> None:
    """runctl runs ML training jobs that survive losing their machine."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    app = ctx.ensure_object(App)
    app.config_path = config_path
    app.output = Output(output_format, verbose)


def main(argv: list[str] | None = None) -> None:
    """The console script: run the CLI and map every outcome to an exit code."""
    verbose = bool({"-v", "-vv", "--verbose"} & set(sys.argv[1:] if argv is None else argv))
    try:
        code = cli.main(args=argv, prog_name="runctl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("runctl: stopped", err=True)
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("runctl: stopped", err=True)
        code = EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code if exc.exit_code else EXIT_USAGE
    except RunctlError as exc:
        click.echo(f"runctl: error: {exc}", err=True)
        code = exc.exit_code
    except BrokenPipeError:
        code = 1
    except Exception as exc:  # a bug: say so in one line, keep the traceback for -v
        if verbose:
            raise
        click.echo(f"runctl: internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)", err=True)
        code = 1
    sys.exit(code or 0)
