"""``edgecam predict``: explain image files with a converted model (device path, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import click

from ._common import cli_errors


def overlay_names(images: Sequence[str]) -> Dict[int, str]:
    """``<stem>.overlay.png`` for each input (by position), ``<stem>-2.overlay.png``… when stems repeat.

    Two inputs that share a file name (``a/x.png`` and ``b/x.png``, or ``x.png`` and ``x.jpg``)
    must not overwrite each other's overlay; the first keeps the plain name.
    """
    taken, names = set(), {}
    for i, name in enumerate(images):
        stem, n = Path(name).stem, 1
        candidate = f"{stem}.overlay.png"
        while candidate in taken:
            n += 1
            candidate = f"{stem}-{n}.overlay.png"
        taken.add(candidate)
        names[i] = candidate
    return names


@click.command("predict")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Write <name>.overlay.png here.")
@click.option("--class-index", type=int, help="Explain this class instead of the prediction.")
@click.option("--threads", type=int, help="Interpreter threads.")
@click.option("--tiles", metavar="SIZE[:STRIDE]",
              help="Explain each image as SIZE-px tiles every STRIDE px (default SIZE/2), stitched into one "
                   "heatmap (whole wood boards; docs/wood.md).")
@click.option("--max-image-pixels", type=click.IntRange(1, 2**40),
              help="Refuse images whose header claims more pixels than this (default 8847360 = 4096x2160, "
                   "or $EDGECAM_MAX_IMAGE_PIXELS).")
def predict(model, images, out, class_index, threads, tiles, max_image_pixels):
    """Classify and explain IMAGES with MODEL (.tflite or .onnx); print label, confidence and CAM peak."""
    import cv2

    from firmware_host import ExplainableModel
    from firmware_host._io import atomic_write_bytes, ensure_writable_dir
    from firmware_host.errors import InputError
    from firmware_host import imageio

    with cli_errors():
        limit = imageio.max_image_pixels() if max_image_pixels is None else max_image_pixels
        explainer = ExplainableModel(model, num_threads=threads)
        if tiles is not None:
            from firmware_host.tiles import TiledModel, parse_tiles

            explainer = TiledModel(explainer, parse_tiles(tiles))
        out_dir = ensure_writable_dir(out) if out else None
        names = overlay_names(images)
        skipped = 0
        for i, name in enumerate(images):
            try:
                rgb = imageio.load_image(name, rgb=True, max_pixels=limit)
            except InputError as exc:
                click.echo(f"{name}: skipped ({exc})", err=True)
                skipped += 1
                continue
            exp = explainer.explain(rgb, class_index=class_index)
            click.echo(
                f"{name}: {exp.label} {exp.confidence:.3f} (predicted {explainer.classes[exp.predicted_index]}), "
                f"CAM peak {exp.peak()} of {exp.cam.shape}, {exp.latency_ms:.1f} ms"
            )
            if out_dir is not None:
                overlay = exp.overlay(rgb)
                ok, png = cv2.imencode(".png", overlay[..., ::-1])
                if not ok:
                    raise InputError(f"Could not encode the overlay of {name}.")
                if names[i] != f"{Path(name).stem}.overlay.png":
                    click.echo(f"{name}: overlay written as {names[i]} (another input has the same name)", err=True)
                atomic_write_bytes(Path(out_dir) / names[i], png.tobytes())
        if skipped == len(images):
            raise InputError(
                f"None of the {len(images)} file(s) given is a readable image "
                f"(first: '{images[0]}'). Pass PNG/JPEG/BMP files."
            )
        if skipped:
            click.echo(f"{skipped} of {len(images)} file(s) skipped (not readable images).", err=True)
