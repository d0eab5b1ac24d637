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
def demo(out, seed, quick, no_progress, fleet):
    """Fog dataset → training → float32/int8 export → explained drive video → validation report."""
    quiet_tensorflow()
    with cli_errors():
        from toolkit.demo import DEFAULT, QUICK, run_demo

        run_demo(out, config=QUICK if quick else DEFAULT, seed=seed, progress=not no_progress, echo=click.echo,
                 fleet=fleet)
