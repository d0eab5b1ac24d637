"""``edgecam validate``: edge heatmaps vs full Grad-CAM, with a CI gate (exit code 1 on failure)."""

from __future__ import annotations

import click

from ._common import cli_errors, quiet_tensorflow


@click.command("validate")
@click.argument("keras_model", type=click.Path(exists=True))
@click.argument("edge_model", type=click.Path(exists=True, dir_okay=False))
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False),
              help="Folder of images to validate on (searched recursively).")
@click.option("--from-log", "from_log", type=click.Path(exists=True, dir_okay=False),
              help="Validate what a device produced: the JSONL written by `edgecam run`.")
@click.option("--boxes", "boxes", type=click.Path(exists=True, dir_okay=False),
              help="Ground-truth boxes (boxes.json) for the pointing game and energy in box; default "
                   "DIR/boxes.json when --images DIR has one.")
@click.option("--pointing-tolerance", type=click.FloatRange(0, 1e6), default=15.0, show_default=True,
              help="Pointing-game tolerance in image pixels (Zhang et al. 2018).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder for summary.json, per_image.csv and report.html.")
@click.option("--method", default="gradcam", show_default=True, help="Host explainer to compare with.")
@click.option("--target-layer", default=None,
              help="Layer of the full Grad-CAM (default: chosen as `edgecam convert` does).")
@click.option("--min-pearson", type=float, default=None,
              help="Fail (exit 1) if the median feature-map Pearson is below this.")
@click.option("--min-p05", type=float, default=None,
              help="Fail (exit 1) if the 5th percentile of the Pearson, overall or for any class, is below this.")
@click.option("--min-top1", type=float, default=None,
              help="Fail (exit 1) if the top-1 agreement (fraction) is below this.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--steps", "faithfulness_steps", type=click.IntRange(min=1), default=16, show_default=True,
              help="Deletion/insertion steps.")
@click.option("--faithfulness-images", type=click.IntRange(min=0), default=50, show_default=True,
              help="Score deletion/insertion AUC on at most N images spread over the set (0: all).")
@click.option("--no-faithfulness", is_flag=True, help="Skip deletion/insertion AUC (much faster).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--unsafe", is_flag=True, help="Load the Keras model with safe_mode off (trusted files only).")
def validate_cmd(keras_model, edge_model, images_dir, from_log, boxes, pointing_tolerance, out_dir, method, target_layer,
                 min_pearson, min_p05, min_top1, batch_size, faithfulness_steps, faithfulness_images,
                 no_faithfulness, quiet, unsafe):
    """Compare EDGE_MODEL's heatmaps with full Grad-CAM of KERAS_MODEL.

    Writes summary.json, per_image.csv and report.html to --out. Exits with code 1 when a
    --min-pearson / --min-top1 threshold fails, so CI can gate a model release on it.
    """
    if (images_dir is None) == (from_log is None):
        raise click.UsageError("Pass exactly one of --images DIR or --from-log RUN.jsonl.")
    quiet_tensorflow()
    from toolkit.validate import ImageFolderSource, RunLogSource, ValidationOptions, validate_source

    with cli_errors():
        options = ValidationOptions(
            method=method, min_pearson=min_pearson, min_p05=min_p05, min_top1=min_top1, batch_size=batch_size,
            faithfulness=not no_faithfulness, progress=not quiet, target_layer=target_layer,
            faithfulness_steps=faithfulness_steps, faithfulness_images=faithfulness_images or None,
            safe_mode=not unsafe, pointing_tolerance=pointing_tolerance)
        if boxes is not None and from_log is not None:
            raise click.UsageError("--boxes goes with --images (the frames of a log have no boxes).")
        source = RunLogSource(from_log) if from_log is not None else ImageFolderSource(images_dir, boxes)
        result = validate_source(keras_model, edge_model, source, out_dir, options)
    click.echo(result.describe())
    if not result.passed:
        click.get_current_context().exit(1)
