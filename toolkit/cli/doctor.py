"""``edgecam doctor``: check a device is ready (runs on the device; never imports TensorFlow)."""

from __future__ import annotations

import click

from toolkit.cli._common import cli_errors


@click.command("doctor")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False), default=None,
              help="An extracted bundle or installed release (e.g. ~/edgecam/current).")
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A .tflite to load and explain a test frame with.")
@click.option("--repeats", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Timed explain calls after one warm-up.")
def doctor(bundle, model, repeats):
    """Report Python, numpy, OpenCV, interpreter, cameras, disk, and whether the model explains a test frame."""
    from firmware_host.doctor import run_doctor

    with cli_errors():
        report = run_doctor(bundle=bundle, model=model, repeats=repeats)
    click.echo(report.format())
    if not report.ok:
        raise click.exceptions.Exit(1)
