"""``edgecam fleet``: fleet-wide commands (``validate``: many vehicles' run logs vs full Grad-CAM).

The options of ``fleet validate`` are generated from the fields of
:class:`toolkit.fleet.api.FleetOptions` (flag, help, bounds in each field's metadata); importing
it does not import TensorFlow.
"""

from __future__ import annotations

from dataclasses import fields

import click

from ._common import cli_errors, quiet_tensorflow


@click.group("fleet", context_settings={"help_option_names": ["-h", "--help"]})
def fleet():
    """Validate a fleet's run logs: many vehicles, one summary and report."""


def _click_option(f):
    """The click option of one :class:`FleetOptions` field."""
    meta = f.metadata
    if meta.get("invert"):
        return click.option(meta["flag"], f.name, flag_value=not f.default, default=f.default, help=meta["help"])
    if "choices" in meta:
        kind = click.Choice(list(meta["choices"]))
    elif f.type in ("Optional[int]", "int"):
        kind = click.IntRange(min=meta.get("low"))
    else:
        kind = {"Optional[float]": float}.get(f.type, str)
    return click.option(meta["flag"], f.name, type=kind, default=f.default, help=meta["help"],
                        metavar=meta.get("metavar"), show_default=f.default is not None)


def fleet_options(command):
    """Decorate ``command`` with every :class:`FleetOptions` option, in field order."""
    from toolkit.fleet.api import FleetOptions

    for f in reversed(fields(FleetOptions)):
        command = _click_option(f)(command)
    return command


@fleet.command("validate")
@click.argument("logs", nargs=-1, required=True)
@click.option("--keras", "keras", multiple=True, required=True, type=click.Path(exists=True),
              help="A Keras model the fleet ran (repeatable); logs are matched to it by its sha256.")
@click.option("--edge", "edges", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Its converted model (repeatable, optional): preprocessing and class names from its metadata.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: fleet_summary.json, per_frame.parquet, worst/, fleet_report.html, cache/.")
@fleet_options
def validate_cmd(logs, keras, edges, out_dir, **values):
    """Compare the CAMs a fleet's devices logged with full Grad-CAM, per vehicle, day and model.

    LOGS are run logs (.jsonl), folders searched for them, or globs. Exits with code 1 when a
    vehicle fails --min-pearson / --min-p05 / --min-top1, naming it.
    """
    quiet_tensorflow()
    from toolkit.fleet.api import FleetOptions, fleet_validate

    with cli_errors():
        result = fleet_validate(logs, keras, out_dir, edges, FleetOptions(**values))
    click.echo(result.describe())
    if not result.passed:
        failing = ", ".join(result.summary["verdict"]["failing_vehicles"])
        click.echo(f"failing vehicles: {failing}", err=True)
        click.get_current_context().exit(1)


from .fleet_synth import synth_cmd  # noqa: E402  (its imports are lazy too)

fleet.add_command(synth_cmd)
