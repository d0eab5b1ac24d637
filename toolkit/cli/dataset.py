"""``edgecam dataset``: generate datasets (numpy + OpenCV; no TensorFlow)."""

from __future__ import annotations

import click

from toolkit.cli._common import cli_errors


@click.group("dataset")
def dataset():
    """Generate training data without downloading anything."""


@dataset.command("fog")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (one sub-folder per class).")
@click.option("--n", "n", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Number of images.")
@click.option("--size", type=click.IntRange(min=8), default=64, show_default=True,
              help="Square image size in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--imbalance", is_flag=True,
              help="Real-world class shares (no-fog 55%, light 25%, moderate 13%, dense 7%).")
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False),
              help="Fog your own clear road photos (horizon depth prior) instead of rendered scenes.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fog(out_dir, n, size, seed, imbalance, images_dir, quiet):
    """Fog-level road scenes: dense-fog, moderate-fog, light-fog, no-fog.

    Fog follows the atmospheric scattering model I = J·t + A·(1 − t), t = exp(−β·d), with
    visibility V = 3.912/β deciding the class (50 m, 200 m, 1000 m). See docs/fog.md.
    """
    from toolkit.datasets.fog import class_counts, generate_dataset

    with cli_errors():
        out = generate_dataset(out_dir, n, size=(size, size), seed=seed, imbalance=imbalance,
                               images_dir=images_dir, progress=not quiet)
        counts = ", ".join(f"{k} {v}" for k, v in class_counts(n, imbalance).items())
    click.echo(f"Wrote {n} images ({counts}) to {out}")
    click.echo(f"Labels: {out / 'labels.txt'}; per-image physics: {out / 'dataset.json'}")


@dataset.command("wood")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (one sub-folder per class, boxes.json).")
@click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True,
              help="Number of boards (split evenly over the classes).")
@click.option("--size", type=click.IntRange(min=64), default=512, show_default=True,
              help="Square board size in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def wood(out_dir, n, size, seed, quiet):
    """Wood boards with small defects: sound, knot, crack, resin (pocket).

    Growth rings of varying width and curvature, grain noise and a colour that changes from
    board to board; each defect's box is in boxes.json. Train on crops with
    `edgecam train DIR --crop 128`. See docs/wood.md.
    """
    from toolkit.datasets.wood import BOXES_FILE, generate_wood_dataset, wood_counts

    with cli_errors():
        out = generate_wood_dataset(out_dir, n, size=(size, size), seed=seed, progress=not quiet)
        counts = ", ".join(f"{k} {v}" for k, v in wood_counts(n).items())
    click.echo(f"Wrote {n} boards ({counts}) to {out}")
    click.echo(f"Defect boxes: {out / BOXES_FILE}; per-board details: {out / 'dataset.json'}")
