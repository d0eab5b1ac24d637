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
@click.option("--choose-plan", is_flag=True,
              help="Time every precision plan the --bundle ships on this device, choose the fastest, and point "
              "its run.toml at it (the choice and the table go to plan.json).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Interpreter threads for --choose-plan [default: run.toml's threads, else the runtime's].")
def doctor(bundle, model, repeats, choose_plan, threads):
    """Report Python, numpy, OpenCV, interpreter, cameras, disk, and whether the model explains a test frame."""
    from firmware_host.doctor import run_doctor

    if choose_plan and bundle is None:
        raise click.UsageError("--choose-plan needs --bundle DIR (an extracted bundle or installed release).")
    with cli_errors():
        report = run_doctor(bundle=bundle, model=model, repeats=repeats, choose_plan=choose_plan, threads=threads)
    click.echo(report.format())
    if not report.ok:
        raise click.exceptions.Exit(1)
