"""``edgecam fleet synth``: write a synthetic fleet of real ``edgecam run`` logs (toolkit.fleet.synth)."""

from __future__ import annotations

import click

from ._common import cli_errors, quiet_tensorflow


@click.command("synth")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: models/, logs/<vehicle>/run-*.jsonl (+ frames), fleet.json (what was built in).")
@click.option("--model", "model_a", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Keras model every vehicle runs (a .tflite beside it converted from it is reused).")
@click.option("--model-b", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Keras model the first vehicle switches to mid-way (default: --model with perturbed weights).")
@click.option("--vehicles", type=click.IntRange(1, 1000), default=6, show_default=True)
@click.option("--days", type=click.IntRange(1, 366), default=2, show_default=True)
@click.option("--drives-per-day", type=click.IntRange(1, 24), default=2, show_default=True)
@click.option("--frames", type=click.IntRange(2, 100_000), default=16, show_default=True, help="Frames per drive.")
@click.option("--interval", "frame_interval_s", type=click.FloatRange(0, 3600, min_open=True), default=60.0,
              show_default=True, help="Simulated seconds between frames.")
@click.option("--save-every", type=click.IntRange(min=1), default=2, show_default=True,
              help="Save every Nth frame beside the log.")
@click.option("--first-day", default="2026-03-02", show_default=True, help="Date of day 1 (YYYY-MM-DD, UTC).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-model-change", is_flag=True, help="No vehicle switches models.")
@click.option("--no-degraded", is_flag=True, help="No vehicle with a degraded camera.")
@click.option("--no-faults", is_flag=True, help="No broken records or frames.")
def synth_cmd(out_dir, model_a, model_b, no_model_change, no_degraded, no_faults, **sizes):
    """Write N vehicles × D days of run logs made by the real `edgecam run` on fog drive videos.

    The first vehicle switches to model B half-way; the last one's camera degrades (dim, blurred,
    noisy), so its maps drift from full Grad-CAM; a few records and one frame are broken. All of
    it is listed in OUT/fleet.json. Then: edgecam fleet validate OUT/logs --keras MODEL --keras
    OUT/models/<model>_b.keras --out REPORT.
    """
    quiet_tensorflow()
    from toolkit.fleet.synth import FleetSpec, synthesize_fleet

    with cli_errors():
        spec = FleetSpec(model_change=not no_model_change, degraded=not no_degraded, faults=not no_faults, **sizes)
        fleet = synthesize_fleet(out_dir, model_a, model_b, spec, echo=lambda message: click.echo(message, err=True))
    click.echo(f"{len(fleet.runs)} logs of {spec.vehicles} vehicles in {fleet.logs_dir}; truth in {fleet.truth}")
    if fleet.changing_vehicle:
        click.echo(f"model change: {fleet.changing_vehicle} → {fleet.keras['b']}")
    if fleet.degraded_vehicle:
        click.echo(f"degraded camera: {fleet.degraded_vehicle}")
    keras = " ".join(f"--keras {fleet.keras[k]}" for k in ("a", "b"))
    click.echo(f"next: edgecam fleet validate {fleet.logs_dir} {keras} --out {fleet.out_dir / 'report'}")
