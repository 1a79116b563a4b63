"""--env and --secret, shared by ``runctl run``, ``runctl aws run`` and ``runctl aws train``:
the script's environment variables and secret references, merged over the job table's
``[jobs.NAME.env]`` and ``[jobs.NAME.secrets]`` (an option wins over the table)."""

from __future__ import annotations

import dataclasses

import click

from runctl.errors import UsageError


def with_env_options(func):
    """The two repeatable options; the command takes ``env`` and ``secret`` (tuples of items)."""
    for option in reversed((
        click.option("--env", "env", multiple=True, metavar="KEY=VALUE",
                     help="Environment variable of the script; repeatable; over [jobs.NAME.env]. Stored in the "
                          "job's spec: use --secret for secrets."),
        click.option("--secret", "secret", multiple=True, metavar="NAME=REF",
                     help="Environment variable read from ssm:/path/to/parameter or secretsmanager:SECRET_ID "
                          "where the job runs, with its credentials (the instance role on AWS); repeatable. "
                          "Only the reference is stored."),
    )):
        func = option(func)
    return func


def with_environment(named, env: tuple[str, ...], secret: tuple[str, ...]):
    """``named`` (a ``runctl.cli._named.Invocation``) with the options merged into its job's
    env and secrets: a name given by an option takes the option's value or reference, whichever
    the table had. UsageError (exit 2) on a bad item or a name given by both options."""
    from runctl.job_env import overlap, parse_pairs

    flag_env = parse_pairs(env, "--env")
    flag_secrets = parse_pairs(secret, "--secret", references=True)
    both = overlap(flag_env, flag_secrets)
    if both:
        raise UsageError(f"{both[0]} is given by both --env and --secret; keep one")
    job = named.job
    merged_env = {k: v for k, v in job.env.items() if k not in flag_secrets} | flag_env
    merged_secrets = {k: v for k, v in job.secrets.items() if k not in flag_env} | flag_secrets
    both = overlap(merged_env, merged_secrets)
    if both:
        raise UsageError(f"{both[0]} is in both [jobs.{named.name}.env] and [jobs.{named.name}.secrets]; keep one")
    if not (env or secret):
        return named
    return dataclasses.replace(named, job=dataclasses.replace(job, env=merged_env, secrets=merged_secrets))
