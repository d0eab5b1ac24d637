"""``edgecam explain``: explain images with a Keras model on the host (every method, batched)."""

from __future__ import annotations

import click

from ._common import cli_errors, preprocessing_options, quiet_tensorflow

# The registry drives the choices; importing it does not import TensorFlow.
from toolkit.explain import METHODS


@click.command("explain")
@click.argument("model", type=click.Path(exists=True))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--method", "-m", "methods", multiple=True, default=("gradcam",), show_default=True,
              type=click.Choice(["all", *METHODS]), help="Method(s); repeat the option, or 'all'.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--target-layer", help="Explanation layer (outer/inner for nested models).")
@click.option("--class-index", type=int, help="Explain this class instead of the predicted one.")
@click.option("--target", type=click.Choice(["logit", "probability"]), default="logit", show_default=True,
              help="Score explained: the pre-softmax logit or the probability.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images (and masked/noisy/path inputs) per forward pass.")
@preprocessing_options
@click.option("--steps", type=click.IntRange(min=1), default=64, show_default=True, help="Integrated-gradients steps.")
@click.option("--baseline", type=click.Choice(["black", "zeros", "blur"]), default="black", show_default=True,
              help="Integrated-gradients baseline.")
@click.option("--samples", type=click.IntRange(min=1), default=16, show_default=True, help="SmoothGrad samples.")
@click.option("--no-figure", is_flag=True, help="Skip the side-by-side figure per image.")
@click.option("--unsafe", is_flag=True, help="Load the model with Keras safe_mode off (trusted files only).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def explain_cmd(model, images, methods, out, target_layer, class_index, target, batch_size, color,
                input_scale, input_offset, mean, std, steps, baseline, samples, no_figure, unsafe, quiet):
    """Explain IMAGES (files or folders) with the Keras MODEL; write overlays and figures to OUT."""
    quiet_tensorflow()
    from toolkit.explain.images import explain_images

    with cli_errors():
        run = explain_images(
            model, images, out,
            methods="all" if "all" in methods else list(dict.fromkeys(methods)),
            target_layer=target_layer, class_index=class_index, batch_size=batch_size, target=target,
            color=color, input_scale=input_scale or None, input_offset=input_offset or None,
            mean=mean or None, std=std or None,
            steps=steps, samples=samples, baseline=baseline, figure=not no_figure,
            progress=not quiet, safe_mode=not unsafe,
        )
    for item in run.images:
        extra = "".join(f", {k} {v:.4f}" for k, v in item.info.items() if k.endswith("completeness_error"))
        click.echo(f"{item.source.name}: class {item.class_index} (p={item.probability:.3f}){extra}")
    click.echo(
        f"{len(run.images)} image(s) × {len(run.methods)} method(s) → {run.summary.parent} "
        f"({len(run.skipped)} skipped). Preprocessing {run.preprocessing}."
    )
