"""Helpers shared by the CLI commands: one-line CLI errors, and options several commands take."""

from __future__ import annotations

import contextlib
import os

import click

from firmware_host.errors import EdgecamError


@contextlib.contextmanager
def cli_errors():
    """Turn edgecam errors into ``click.ClickException`` (one line, exit code 1, no traceback)."""
    try:
        yield
    except EdgecamError as exc:
        raise click.ClickException(str(exc)) from exc


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter before it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # oneDNN has segfaulted in conv backprop on one real model; the plain path is safe.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


#: The model-input preprocessing flags that ``convert`` and ``explain`` share.
PREPROCESSING_OPTIONS = (
    click.option("--color", type=click.Choice(["rgb", "bgr", "gray"]), help="Channel order the model expects."),
    click.option("--input-scale", type=float, multiple=True, help="x = pixel*scale + offset (1 or 3 values)."),
    click.option("--input-offset", type=float, multiple=True, help="See --input-scale."),
    click.option("--mean", type=float, multiple=True, help="x = (pixel - mean) / std, instead of scale/offset."),
    click.option("--std", type=float, multiple=True, help="See --mean."),
)


def preprocessing_options(command):
    """Decorate a click command with :data:`PREPROCESSING_OPTIONS`, listed in that order in ``--help``."""
    for option in reversed(PREPROCESSING_OPTIONS):
        command = option(command)
    return command
