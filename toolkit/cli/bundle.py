"""``edgecam bundle``: package a converted model for a device (no TensorFlow needed)."""

from __future__ import annotations

import click

from toolkit.cli._common import cli_errors


@click.command("bundle")
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
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
@click.option("--plans", "plan_names", default=None, metavar="auto|PLAN,PLAN",
              help="Ship several precision plans; the device picks the fastest (`edgecam doctor --choose-plan`). "
              "With a Keras MODEL: convert each plan (auto: all six) and check it on held-out --calibration images.")
@click.option("--calibration", type=click.Path(exists=True, file_okay=False), default=None,
              help="Calibration images for --plans with a Keras model (a quarter is held out to check fidelity).")
@click.option("--min-p05", type=click.FloatRange(-1, 1), default=None,
              help="Fidelity target a shipped plan meets: 5th percentile of the CAM Pearson [default: 0.98].")
@click.option("--min-top1", type=click.FloatRange(0, 1), default=None,
              help="Fidelity target: top-1 agreement with the float model [default: 0.99].")
def bundle(models, target, out, config, with_wheels, python_versions, wheel, plan_names, calibration,
           min_p05, min_top1):
    """Write a self-contained, checksummed bundle that installs MODEL on a device.

    MODEL is a converted .tflite; or a Keras model with --plans auto --calibration DIR; or several
    converted .tflite files, one per plan (their self-check decides which ship). Deploy it with
    `edgecam deploy BUNDLE.tar.gz user@host`, or copy it and run `sh install.sh` on the device.
    Layout and options: docs/deploy.md; plans: docs/devices.md.
    """
    from toolkit.deploy.bundle import build_bundle, iter_bundle_lines
    from toolkit.deploy.scratch import owned_tempdir, sigterm_unwinds

    with sigterm_unwinds(), cli_errors(), owned_tempdir(".edgecam-plans-") as work:  # SIGTERM still cleans up
        plans = _plans(models, plan_names, calibration, min_p05, min_top1, work)
        if plans is not None:
            for line in _plan_lines(plans):
                click.echo(line)
        result = build_bundle(models[0], target=target, out=out, config=config, with_wheels=with_wheels,
                              wheel=wheel, python_versions=python_versions or None, plans=plans)
    for line in iter_bundle_lines(result):
        click.echo(line)


def _plans(models, plan_names, calibration, min_p05, min_top1, work):
    """The PlanSet to ship, or None for the one-model bundle."""
    from firmware_host.errors import InputError
    from toolkit.deploy.plans import parse_plans, plans_from_files, plans_from_keras

    tflite = all(str(m).endswith(".tflite") for m in models)
    if tflite and len(models) == 1 and plan_names is None:
        return None
    if tflite:
        return plans_from_files(models, min_p05, min_top1)
    if len(models) != 1:
        raise InputError(f"Pass one Keras model, or converted .tflite files only. Got: {', '.join(models)}.")
    return plans_from_keras(models[0], work, parse_plans(plan_names or "auto"), calibration, min_p05, min_top1)


def _plan_lines(plans):
    from converters.quant import figures_from_dict, format_table, targets_from_dict

    yield "Precision plans (fidelity on held-out calibration images; only passing plans ship):"
    rows = [figures_from_dict(p.row) for p in plans.plans]
    yield from format_table(rows, targets_from_dict(plans.targets)).splitlines()
    for p in plans.plans:
        by_class = p.row.get("p05_by_class") or {}
        if by_class:
            yield f"  {p.plan:<11} p05 by class: " + ", ".join(f"{k} {v:.4f}" for k, v in by_class.items())
