"""``edgecam run``: explained inference on a camera, video, folder or stream (device path, no TensorFlow).

The options are generated from :class:`firmware_host.options.RunOptions` (names, help, defaults,
bounds): this module only turns them into click options and prints the summary.
"""

from __future__ import annotations

import json

import click

from firmware_host.options import CLI_OPTIONS, OptionSpec

from ._common import cli_errors
from ._runconfig import config_option


class _OptionType(click.ParamType):
    """A click type that converts with the option's own :meth:`OptionSpec.convert`, so the CLI,
    run.toml and Python give the same one-line error for the same bad value."""

    def __init__(self, option: OptionSpec) -> None:
        self.option = option
        self.name = option.metavar or option.kind

    def convert(self, value, param, ctx):
        from firmware_host.errors import InputError

        try:
            return self.option.convert(value)
        except InputError as exc:
            self.fail(str(exc), param, ctx)


def _click_option(option: OptionSpec):
    decls = [option.flag, *([option.short] if option.short else []), option.name]
    if option.kind == "bool":
        return click.option(*decls, is_flag=True, default=bool(option.default), help=option.help)
    # Defaults the help text already states (None) or spells differently (doc_default) are not repeated.
    shown = option.default is not None and option.name != "source"
    return click.option(
        *decls, type=str if option.name == "source" else _OptionType(option), default=option.default,
        required=option.name == "source", metavar=option.metavar, help=option.described,
        show_default=(option.doc_default or True) if shown else False,
    )


def run_options(command):
    """Decorator adding every option of :data:`firmware_host.options.CLI_OPTIONS`, in order."""
    for option in reversed(CLI_OPTIONS):
        command = _click_option(option)(command)
    return command


@click.command("run")
@config_option
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@run_options
def run_cmd(model, source, as_json, **values):
    """Explain every frame of --source with MODEL (.tflite or .onnx); stop with Ctrl-C or SIGTERM.

    Writes what was asked for (annotated video, JSONL log + frames, snapshots, live preview)
    and prints a summary: frames, dropped, corrupt, fps, latency p50/p95, class histogram.
    """
    from firmware_host.errors import EdgecamError
    from firmware_host.options import RunOptions
    from firmware_host.runner import run

    def started(outputs):
        if "preview" in outputs:
            click.echo(f"preview: {outputs['preview']}", err=True)
        click.echo("running; Ctrl-C or SIGTERM stops cleanly", err=True)

    def report(summary):
        click.echo(json.dumps(summary.to_dict()) if as_json else summary.format())

    with cli_errors():
        try:
            summary = run(model, source, RunOptions(**values), handle_signals=True, on_start=started)
        except EdgecamError as exc:
            if getattr(exc, "summary", None) is not None:
                report(exc.summary)  # what was done before the source was lost
            raise
    report(summary)
