"""``edgecam inspect``: print a converted model's edgecam metadata (no TensorFlow)."""

from __future__ import annotations

import json

import click

from ._common import cli_errors


@click.command("inspect")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the raw metadata JSON.")
@click.option("--providers", help="ONNX: execution providers to try, comma-separated (default tensorrt,cuda,cpu).")
def inspect_cmd(model, as_json, providers):
    """Show MODEL's (.tflite or .onnx) edgecam metadata and the runtime that would run it."""
    from firmware_host.model import open_model

    with cli_errors():  # the metadata is checked against the model, for --json too
        backend, meta = open_model(model, providers=providers.split(",") if providers else None)
    if as_json:
        click.echo(json.dumps(meta.to_json_dict(), indent=2))
        return
    pre = meta.preprocessing
    click.echo(f"{model}: edgecam metadata {meta.format_version}")
    click.echo(f"  classes        {len(meta.classes)}: {', '.join(meta.classes)}")
    click.echo(f"  input          {pre.height}x{pre.width} {pre.color}, x = pixel*{list(pre.scale)} + {list(pre.offset)}")
    click.echo(f"  target layer   {meta.target_layer} {meta.feature_map_shape}")
    click.echo(f"  CAM            mode={meta.cam_mode} output={meta.cam_output} method={meta.cam_method}")
    click.echo(f"  quantization   {meta.quantization}")
    click.echo(f"  runtime        {backend.describe()}")
    click.echo(f"  source         {meta.source.get('name')} sha256={str(meta.source.get('sha256'))[:16]}")
    if meta.self_check:
        sc = meta.self_check
        click.echo(
            f"  self-check     top-1 {sc['top1_agreement']:.3f}, Pearson median {sc['pearson_median']:.4f} "
            f"({'passed' if sc['passed'] else 'BELOW THRESHOLD'})"
        )
    if meta.precision:
        from converters.quant import describe_precision

        try:
            lines = describe_precision(meta.precision)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a field of the wrong shape
            lines = [f"unreadable precision table ({type(exc).__name__}); convert the model again"]
        click.echo(f"  precision      {lines[0]}")
        for line in lines[1:]:
            click.echo(f"                 {line}")
