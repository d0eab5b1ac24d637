"""``edgecam predict``: explain image files with a converted model (device path, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import cli_errors


@click.command("predict")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Write <name>.overlay.png here.")
@click.option("--class-index", type=int, help="Explain this class instead of the prediction.")
@click.option("--threads", type=int, help="Interpreter threads.")
def predict(model, images, out, class_index, threads):
    """Classify and explain IMAGES with MODEL (.tflite or .onnx); print label, confidence and CAM peak."""
    import cv2

    from firmware_host import ExplainableModel
    from firmware_host._io import atomic_write_bytes, ensure_writable_dir
    from firmware_host.errors import InputError
    from firmware_host.sources import read_image

    with cli_errors():
        explainer = ExplainableModel(model, num_threads=threads)
        out_dir = ensure_writable_dir(out) if out else None
        skipped = 0
        for name in images:
            rgb = read_image(name, rgb=True)
            if rgb is None:
                click.echo(f"{name}: skipped (not a readable image)", err=True)
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
                atomic_write_bytes(Path(out_dir) / (Path(name).stem + ".overlay.png"), png.tobytes())
        if skipped == len(images):
            raise InputError(
                f"None of the {len(images)} file(s) given is a readable image "
                f"(first: '{images[0]}'). Pass PNG/JPEG/BMP files."
            )
        if skipped:
            click.echo(f"{skipped} of {len(images)} file(s) skipped (not readable images).", err=True)
