"""``edgecam bench``: latency, fps and peak RSS of an explained model, optionally vs its plain baseline."""

from __future__ import annotations

import json

import click

from ._common import cli_errors


@click.command("bench")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False),
              help="Plain model without the explanation head (edgecam convert --emit-baseline); "
              "timed interleaved with MODEL to give the overhead ratio.")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(min=1), help="Timed runs per model.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(min=0), help="Untimed runs first.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Interpreter threads (default: the runtime's).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one line of JSON.")
def bench_cmd(model, baseline, runs, warmup, threads, as_json):
    """Benchmark MODEL (.tflite or .onnx) on this device: latency p50/p95, fps, peak RSS."""
    from firmware_host.bench import bench

    with cli_errors():
        result = bench(model, baseline, runs=runs, warmup=warmup, threads=threads)
    click.echo(json.dumps(result.to_dict()) if as_json else result.format())
