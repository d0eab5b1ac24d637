"""``edgecam bench``: latency, fps and peak RSS of an explained model, optionally vs its plain baseline."""

from __future__ import annotations

import json

import click

from ._common import cli_errors


@click.command("bench")
@click.argument("model", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False),
              help="Plain model without the explanation head (edgecam convert --emit-baseline); "
              "timed interleaved with MODEL to give the overhead ratio.")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(min=1), help="Timed runs per model.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(min=0), help="Untimed runs first.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Interpreter threads (default: the runtime's).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one line of JSON.")
@click.option("--plans", "plans_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Time every precision plan an extracted bundle or release ships, interleaved, and print the "
              "table (what `edgecam doctor --choose-plan` chooses from; nothing is written).")
def bench_cmd(model, baseline, runs, warmup, threads, as_json, plans_dir):
    """Benchmark MODEL (.tflite or .onnx) on this device: latency p50/p95, fps, peak RSS."""
    from firmware_host.bench import bench

    if plans_dir is not None:
        from firmware_host.plans import choose_plan

        with cli_errors():
            choice = choose_plan(plans_dir, threads=threads, write=False)
        click.echo(json.dumps(choice.as_dict()) if as_json else choice.format())
        return
    if model is None:
        raise click.UsageError("Pass MODEL, or --plans BUNDLE_DIR.")
    with cli_errors():
        result = bench(model, baseline, runs=runs, warmup=warmup, threads=threads)
    click.echo(json.dumps(result.to_dict()) if as_json else result.format())
