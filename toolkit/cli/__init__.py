"""The ``edgecam`` command line: a thin, lazily loaded layer over the Python API.

Each command lives in its own module and is imported only when it runs, so ``edgecam --help``
is instant and device commands (``run``, ``bench``, ``doctor``) never import TensorFlow.
Adding a command = one module + one entry in ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import sys

import click

from firmware_host import __version__

# name → ("module:function", one-line help shown by `edgecam --help` without importing it)
COMMANDS = {
    "convert": ("toolkit.cli.convert:convert", "Export a Keras CNN to LiteRT/ONNX with an explanation head."),
    "dataset": ("toolkit.cli.dataset:dataset", "Generate a dataset (fog levels, wood defects) without downloading."),
    "label": ("toolkit.cli.label:label", "Label frames by keyboard in a local web page; export a dataset."),
    "explain": ("toolkit.cli.explain:explain_cmd", "Explain images with a Keras model on the host (all methods)."),
    "inspect": ("toolkit.cli.inspect:inspect_cmd", "Show a converted model's edgecam metadata."),
    "predict": ("toolkit.cli.predict:predict", "Explain images with a converted model (device path)."),
    "frames": ("toolkit.cli.frames:frames", "Extract frames to label from videos or a run log (frames.json)."),
    "train": ("toolkit.cli.train:train", "Train the talk's CNN on a folder-per-class dataset."),
    "run": ("toolkit.cli.run:run_cmd", "Explain a camera, video, folder or stream live (device path)."),
    "bench": ("toolkit.cli.bench:bench_cmd", "Latency, fps and memory of a model vs its plain baseline (device path)."),
    "validate": ("toolkit.cli.validate:validate_cmd", "Compare edge heatmaps with full Grad-CAM; gate CI on it."),
    "fleet": ("toolkit.cli.fleet:fleet", "Validate many vehicles' run logs at once (one machine or Ray)."),
    "demo": ("toolkit.cli.demo:demo", "The whole story on built-in fog data, in one command."),
    "bundle": ("toolkit.cli.bundle:bundle", "Package a model + edgecam + installer for a Raspberry Pi/Jetson."),
    "deploy": ("toolkit.cli.deploy:deploy", "Install a bundle on a device over SSH (or roll it back)."),
    "doctor": ("toolkit.cli.doctor:doctor", "Check this device: Python, interpreter, cameras, disk, model."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module_name, attr = target.split(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgecam")
def cli():
    """edgecam — explainable embedded inference for Keras CNNs on LiteRT devices."""


def main(argv=None):
    """Console entry point."""
    return cli.main(args=argv, prog_name="edgecam")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
