"""Helpers shared by the CLI commands: turning library errors into one-line CLI errors."""

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
