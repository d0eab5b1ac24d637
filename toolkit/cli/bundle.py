"""``edgecam bundle``: package a converted model for a device (no TensorFlow needed)."""

from __future__ import annotations

import click

from toolkit.cli._common import cli_errors


@click.command("bundle")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", type=click.Choice(["rpi", "jetson", "linux"]), default="rpi", show_default=True,
              help="Device family (sets the Pythons for --with-wheels and venv defaults).")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="Bundle to write [default: MODEL-TARGET.tar.gz beside the model].")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="run.toml whose [run] options the device's `edgecam run` uses.")
@click.option("--with-wheels", is_flag=True,
              help="Download every device package (the target's machines) into the bundle for an offline install.")
@click.option("--python-version", "python_versions", multiple=True, metavar="X.Y",
              help="Device Python(s) to download wheels for (repeatable) [default: the target's].")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Use this edgecam wheel instead of building one from the source tree.")
def bundle(model, target, out, config, with_wheels, python_versions, wheel):
    """Write a self-contained, checksummed bundle that installs MODEL on a device.

    Deploy it with `edgecam deploy BUNDLE.tar.gz user@host`, or copy it and run
    `sh install.sh` on the device. Layout and options: docs/deploy.md.
    """
    from toolkit.deploy.bundle import build_bundle, iter_bundle_lines
    from toolkit.deploy.scratch import sigterm_unwinds

    with sigterm_unwinds(), cli_errors():  # SIGTERM still removes the scratch dirs
        result = build_bundle(model, target=target, out=out, config=config, with_wheels=with_wheels,
                              wheel=wheel, python_versions=python_versions or None)
    for line in iter_bundle_lines(result):
        click.echo(line)
