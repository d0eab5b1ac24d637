"""``--config run.toml`` for ``edgecam run``: the bundle's run options as click defaults."""

from __future__ import annotations

import click

from firmware_host.errors import EdgecamError


def _load(ctx: click.Context, param: click.Parameter, value):
    if value is None:
        return None
    from firmware_host.runconfig import load_run_config

    try:
        defaults = load_run_config(value)  # its keys are edgecam run's parameter names
    except EdgecamError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
    # Eager, so it runs before the other parameters read their defaults; the command line wins.
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def config_option(command):
    """Decorator adding ``--config run.toml`` to ``edgecam run`` (keys: docs/deploy.md)."""
    return click.option(
        "--config",
        type=click.Path(exists=True, dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=_load,
        help="run.toml whose [run] options are the defaults (command-line options win).",
    )(command)
