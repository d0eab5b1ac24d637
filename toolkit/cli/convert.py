"""``edgecam convert``: Keras model → LiteRT and/or ONNX with an explanation head."""

from __future__ import annotations

import logging

import click

from converters.quant import LITERT_PLANS  # numpy only: --help stays instant

from ._common import cli_errors, preprocessing_options, quiet_tensorflow


@click.command("convert")
@click.argument("model", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The .tflite or .onnx to write (with --format both: the stem of both).")
@click.option("--format", "fmt", type=click.Choice(["tflite", "onnx", "both"]), default=None,
              help="Container; default: from the output's suffix. 'both' writes OUT.tflite and OUT.onnx.")
@click.option("--quantize", type=click.Choice([*reversed(LITERT_PLANS), "auto"]),
              default="none", show_default=True,
              help="Precision plan; 'auto' converts every plan, measures each against the float model's maps "
                   "on held-out calibration images and writes the cheapest that meets the targets.")
@click.option("--calibration", type=click.Path(exists=True, file_okay=False),
              help="Folder of representative images (needed for int8, int8-mixed, 16x8 and auto; a quarter is held out).")
@click.option("--min-p05", type=click.FloatRange(-1, 1), default=None,
              help="Fidelity target: 5th-percentile CAM Pearson vs the float model [auto: 0.98; a plan: its gate].")
@click.option("--min-median", type=click.FloatRange(-1, 1), default=None,
              help="Fidelity target: median CAM Pearson vs the float model [auto: none; a plan: its gate].")
@click.option("--min-top1", type=click.FloatRange(0, 1), default=None,
              help="Fidelity target: top-1 agreement with the float model [auto: 0.99; a plan: its gate].")
@click.option("--allow-low-fidelity", is_flag=True,
              help="Write a model that misses its fidelity bounds anyway, marked low-fidelity (the device warns).")
@click.option("--plan-cost", type=click.Choice(["measured", "nominal"]), default="measured", show_default=True,
              help="How auto ranks passing plans: interpreter latency measured here, or the nominal ARM order.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), help="Class names, one per line.")
@click.option("--target-layer", "--target-tensor", "target_layer",
              help="Explanation layer ('outer/inner' inside nested models); for .onnx input, the tensor name.")
@preprocessing_options
@click.option("--input-size", type=int, nargs=2, help="H W, for models built without a fixed input size.")
@click.option("--cam-output", type=click.Choice(["auto", "all", "predicted"]), default="auto", show_default=True,
              help="Emit every class's map (1x1 conv) or only the predicted class's.")
@click.option("--cam-method", type=click.Choice(["gradcam", "hirescam"]), default="gradcam", show_default=True,
              help="HiResCAM is exact for Flatten heads.")
@click.option("--approximate", is_flag=True, help="Allow approximate CAM weights for heads that cannot be made exact.")
@click.option("--unsafe", is_flag=True, help="Turn Keras safe_mode off (runs code stored in the file!).")
@click.option("--no-self-check", is_flag=True, help="Skip the comparison with GradientTape Grad-CAM.")
@click.option("--emit-baseline", is_flag=True, help="Also write OUT.plain.tflite (.plain.onnx) without the explanation head.")
def convert(model, output, fmt, quantize, calibration, min_p05, min_median, min_top1, allow_low_fidelity, plan_cost, labels,
            target_layer, color, input_scale, input_offset, mean, std, input_size, cam_output, cam_method, approximate,
            unsafe, no_self_check, emit_baseline):
    """Export MODEL (.keras, .h5, SavedModel dir, or .onnx from PyTorch) to a .tflite and/or .onnx that explains itself."""
    quiet_tensorflow()
    logging.basicConfig(level=logging.WARNING, format="edgecam: %(levelname)s: %(message)s")
    with cli_errors():
        from converters import convert as run_convert
        from converters.quant import Targets, default_targets

        click.echo(f"Converting {model} → {output} ({fmt or 'format from suffix'}, quantization: {quantize})…", err=True)
        result = run_convert(
            model,
            output,
            quantize=quantize,
            calibration=calibration,
            labels=labels,
            target_layer=target_layer,
            color=color,
            input_scale=list(input_scale) or None,
            input_offset=list(input_offset) or None,
            mean=list(mean) or None,
            std=list(std) or None,
            input_size=tuple(input_size) if input_size else None,
            cam_output=cam_output,
            cam_method=cam_method,
            approximate=approximate,
            safe_mode=not unsafe,
            self_check=not no_self_check,
            emit_baseline=emit_baseline,
            format=fmt,
            targets=_targets(Targets, default_targets(quantize), min_p05, min_median, min_top1),
            allow_low_fidelity=allow_low_fidelity,
            cost=plan_cost,
        )
    for one in result.all:
        _report(one)


def _targets(Targets, base, min_p05, min_median, min_top1):
    """The plan's default targets with the flags given on the command line, or ``None`` (defaults)."""
    if min_p05 is None and min_median is None and min_top1 is None:
        return None
    pick = lambda given, default: default if given is None else given  # noqa: E731
    return Targets(pearson_p05=pick(min_p05, base.pearson_p05), top1=pick(min_top1, base.top1),
                   pearson_median=pick(min_median, base.pearson_median))


def _report(result) -> None:
    meta = result.metadata
    pre = meta.preprocessing
    click.echo(f"wrote {result.path} ({result.format}, {result.size_bytes / 1024:.1f} KiB)")
    click.echo(f"  classes        {len(meta.classes)}: {', '.join(meta.classes[:8])}{' …' if len(meta.classes) > 8 else ''}")
    click.echo(f"  target layer   {meta.target_layer} {meta.feature_map_shape}")
    click.echo(f"  CAM mode       {meta.cam_mode} / {meta.cam_output} ({meta.cam_method}) — {result.reason}")
    click.echo(f"  preprocessing  {pre.height}x{pre.width} {pre.color}, x = pixel*{list(pre.scale)} + {list(pre.offset)} ({meta.converter.get('preprocessing')})")
    if result.self_check is not None:
        c = result.self_check
        verdict = "ok" if c.passed else "BELOW THRESHOLD (written with --allow-low-fidelity)"
        click.echo(
            f"  self-check     {verdict}: top-1 agreement {c.top1_agreement:.3f} (≥ {c.threshold_top1}), "
            f"Pearson median {c.pearson_median:.4f} (≥ {c.threshold_pearson}) / p05 {c.pearson_p05:.4f} "
            f"(≥ {c.threshold_p05}) / min {c.pearson_min:.4f} on {c.source}"
        )
    if len(result.plans) > 1:
        from converters.quant import format_table, targets_from_dict

        click.echo(f"  precision plan {meta.quantization} (cheapest passing plan, by {meta.precision.get('cost')} cost):")
        table = format_table(result.plans, targets_from_dict(meta.precision["targets"]), meta.quantization)
        click.echo("\n".join("    " + line for line in table.splitlines()))
    if result.baseline_path is not None:
        click.echo(f"  baseline       {result.baseline_path}")
