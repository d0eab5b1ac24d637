"""``edgecam demo``: the whole story on built-in data, in one command."""

from __future__ import annotations

import click

from ._common import cli_errors, quiet_tensorflow


@click.command("demo")
@click.option("--out", default="edgecam-demo", show_default=True, type=click.Path(file_okay=False),
              help="Output folder.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--quick", is_flag=True, help="Tiny sizes (a smoke run in well under a minute).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--fleet", is_flag=True, help="One more step: a small synthetic fleet of run logs and its fleet report.")
@click.option("--case", type=click.Choice(["fog", "wood"]), default="fog", show_default=True,
              help="fog: the road-fog camera; wood: defects on wood boards, tiled (docs/wood.md).")
def demo(out, seed, quick, no_progress, fleet, case):
    """Fog dataset → training → float32/int8 export → explained drive video → validation report."""
    quiet_tensorflow()
    with cli_errors():
        if case == "wood":
            if fleet:
                raise click.UsageError("--fleet goes with the fog case.")
            from toolkit.demo_wood import WOOD_DEFAULT, WOOD_QUICK, run_wood_demo

            out = "edgecam-demo-wood" if out == "edgecam-demo" else out
            run_wood_demo(out, config=WOOD_QUICK if quick else WOOD_DEFAULT, seed=seed, progress=not no_progress,
                          echo=click.echo)
            return
        from toolkit.demo import DEFAULT, QUICK, run_demo

        run_demo(out, config=QUICK if quick else DEFAULT, seed=seed, progress=not no_progress, echo=click.echo,
                 fleet=fleet)
