"""``edgecam fleet``: fleet-wide commands (``validate``: many vehicles' run logs vs full Grad-CAM)."""

from __future__ import annotations

import click

from ._common import cli_errors, quiet_tensorflow


@click.group("fleet", context_settings={"help_option_names": ["-h", "--help"]})
def fleet():
    """Validate a fleet's run logs: many vehicles, one summary and report."""


@fleet.command("validate")
@click.argument("logs", nargs=-1, required=True)
@click.option("--keras", "keras", multiple=True, required=True, type=click.Path(exists=True),
              help="A Keras model the fleet ran (repeatable); logs are matched to it by its sha256.")
@click.option("--edge", "edges", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Its converted model (repeatable, optional): preprocessing and class names from its metadata.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: fleet_summary.json, per_frame.parquet, worst/, fleet_report.html, cache/.")
@click.option("--vehicle-from", default=None, metavar="REGEX",
              help="Regex over each log's path; its 'vehicle' (else first) group names the vehicle, an optional "
                   "'run' group the run. Default: the records' vehicle field, else the log's folder name.")
@click.option("--sample", type=click.IntRange(min=1), default=None, help="Frames per vehicle and day, spread evenly.")
@click.option("--min-pearson", type=float, default=None, help="Fail (exit 1) a vehicle whose median Pearson is below this.")
@click.option("--min-p05", type=float, default=None, help="Fail (exit 1) a vehicle whose 5th-percentile Pearson is below this.")
@click.option("--min-top1", type=float, default=None, help="Fail (exit 1) a vehicle whose top-1 agreement is below this.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: a Ray Data pipeline (pip install 'edgecam[fleet]').")
@click.option("--ray-address", default=None, help="Join this Ray cluster (default: start a local Ray).")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None, help="CPUs of the local Ray instance.")
@click.option("--method", default="gradcam", show_default=True, help="Host explainer to compare with.")
@click.option("--target-layer", default=None, help="Layer of the full Grad-CAM (default: as `edgecam convert`).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--no-resume", is_flag=True, help="Score every log again (ignore OUT/cache).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--unsafe", is_flag=True, help="Load Keras models with safe_mode off (trusted files only).")
def validate_cmd(logs, keras, edges, out_dir, vehicle_from, sample, min_pearson, min_p05, min_top1, engine,
                 ray_address, num_cpus, method, target_layer, batch_size, no_resume, quiet, unsafe):
    """Compare the CAMs a fleet's devices logged with full Grad-CAM, per vehicle, day and model.

    LOGS are run logs (.jsonl), folders searched for them, or globs. Exits with code 1 when a
    vehicle fails --min-pearson / --min-p05 / --min-top1, naming it.
    """
    quiet_tensorflow()
    from toolkit.fleet.api import FleetOptions, fleet_validate

    with cli_errors():
        options = FleetOptions(
            vehicle_from=vehicle_from, sample=sample, min_pearson=min_pearson, min_p05=min_p05, min_top1=min_top1,
            method=method, target_layer=target_layer, safe_mode=not unsafe, batch_size=batch_size, engine=engine,
            ray_address=ray_address, num_cpus=num_cpus, progress=not quiet, resume=not no_resume)
        result = fleet_validate(logs, keras, out_dir, edges, options)
    click.echo(result.describe())
    if not result.passed:
        failing = ", ".join(result.summary["verdict"]["failing_vehicles"])
        click.echo(f"failing vehicles: {failing}", err=True)
        click.get_current_context().exit(1)


from .fleet_synth import synth_cmd  # noqa: E402  (its imports are lazy too)

fleet.add_command(synth_cmd)
