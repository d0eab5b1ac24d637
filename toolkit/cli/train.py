"""``edgecam train``: the talk's training recipe on a folder-per-class dataset (host, TensorFlow)."""

from __future__ import annotations

import click

from toolkit.cli._common import cli_errors, quiet_tensorflow


@click.command("train")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder for model.keras, labels.txt, confusion.png, training.json.")
@click.option("--epochs", type=click.IntRange(min=1), default=15, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--arch", type=click.Choice(["small", "mobilenetv2"]), default="small", show_default=True,
              help="Small CNN, or MobileNetV2 (alpha 0.35, random init: nothing is downloaded).")
@click.option("--kfold", type=click.IntRange(min=2), default=None,
              help="Stratified K-fold cross-validation instead of one 20% held-out split; grouped by "
                   "source video when DATA_DIR has a frames.json (edgecam frames / label --export).")
@click.option("--size", type=click.IntRange(min=32), default=None,
              help="Square input size; default the dataset's size (dataset.json) or 64.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--crop", type=click.IntRange(min=32), default=None,
              help="Train on SIZE-px random crops, labelled by the boxes.json defects they hold (>= 50% of a "
                   "box); a board's crops stay on one side of the split or folds (docs/wood.md).")
@click.option("--crops-per-image", type=click.IntRange(min=1), default=8, show_default=True,
              help="Crops cut from each image with --crop.")
@click.option("--no-augment", is_flag=True, help="Train without the rotation/flip/zoom augmentation.")
@click.option("--quiet", is_flag=True, help="No per-epoch progress.")
def train(data_dir, out_dir, epochs, batch_size, arch, kfold, size, seed, crop, crops_per_image, no_augment, quiet):
    """Train a fog-level (or any folder-per-class) classifier ready for `edgecam convert`."""
    quiet_tensorflow()
    from toolkit.train import train as run_training

    with cli_errors():
        data = data_dir
        if crop is not None:  # cropping data augmentation: labelled crops, grouped by board
            from toolkit.datasets.crops import load_crops

            data = load_crops(data_dir, crop, per_image=crops_per_image, seed=seed)
        result = run_training(data, out_dir, epochs=epochs, batch_size=batch_size, arch=arch,
                              seed=seed, kfold=kfold, size=size, augment=not no_augment,
                              progress=not quiet)
    how = f"{kfold}-fold out-of-fold" if kfold else f"held-out ({result.n_test} {'crops' if crop else 'images'})"
    click.echo(f"{how} accuracy: {result.accuracy:.1%} in {result.seconds:.0f} s")
    if result.fold_accuracies:
        click.echo("per fold: " + ", ".join(f"{a:.1%}" for a in result.fold_accuracies))
    if kfold or result.per_video is not None:
        click.echo(result.grouping)
    support = {c.name: c for c in result.class_support}
    for row in result.report:
        data = support.get(row.name)
        videos = f" in {data.videos} videos" if data is not None and data.videos is not None else ""
        total = f"; data {data.images} images{videos}" if data is not None else ""
        click.echo(f"  {row.name:>14}  precision {row.precision:.2f}  recall {row.recall:.2f}  "
                   f"f1 {row.f1:.2f}  n={row.support}{total}")
    _echo_per_video(result.per_video)
    click.echo(f"Model: {result.model_path}\nLabels: {result.labels_path}\n"
               f"Confusion matrix: {result.confusion_png}\nMetrics: {result.metrics_path}")


def _echo_per_video(rows, limit: int = 15) -> None:
    """Held-out accuracy per source video, worst first (the rest are in training.json)."""
    if not rows:
        return
    click.echo(f"per video (held-out frames), worst first{f', {limit} of {len(rows)}' if len(rows) > limit else ''}:")
    for row in rows[:limit]:
        click.echo(f"  {row.accuracy:6.1%}  {row.correct:>4}/{row.images:<4}  {row.video}")
