"""``edgecam label``: label a folder of frames in a local web page, or export the labels as a dataset."""

from __future__ import annotations

import click

from ._common import cli_errors
from toolkit.label.guesses import ORDERS


@click.command("label")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--classes", help="Class names in key order (1…N), comma-separated, e.g. "
              "dense-fog,moderate-fog,light-fog,no-fog. Default: those of the folder's last session (labels.txt).")
@click.option("--bind", default="127.0.0.1:8090", show_default=True,
              help="PORT or HOST:PORT to serve the page on (PORT 0 picks a free one).")
@click.option("--model", type=click.Path(exists=True, dir_okay=False),
              help="A converted model (.tflite/.onnx): show its guess and on-device heatmap beside each frame.")
@click.option("--order", type=click.Choice(ORDERS), default="file", show_default=True,
              help="Serve frames in folder order, or the model's least confident first (needs --model).")
@click.option("--export", "export_to", type=click.Path(file_okay=False),
              help="Instead of serving: write the labelled frames as OUT/<class>/ (what edgecam train reads).")
@click.option("--copy", is_flag=True, help="With --export: copy the images instead of hard-linking them.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default web browser.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def label(folder, classes, bind, model, order, export_to, copy, open_browser, quiet):
    """Label the images in FOLDER by keyboard (keys 1…N, ←/→, u undo, s skip), saved to FOLDER/labels.csv.

    Every keystroke is saved at once: stop with Ctrl-C at any time and run the same command to
    resume at the first unlabelled frame. With --export OUT, write the dataset instead.
    """
    from toolkit.label import parse_classes, read_classes

    with cli_errors():
        chosen = parse_classes(classes) if classes else None
        if export_to:
            _export(folder, export_to, copy, chosen)
            return
        chosen = chosen or read_classes(folder)
        if chosen is None:
            raise click.UsageError("Pass --classes (e.g. --classes dense-fog,moderate-fog,light-fog,no-fog); "
                                   "later sessions in this folder remember them.")
        _serve(folder, chosen, bind, model, order, open_browser, quiet)


def _export(folder, out, copy, classes) -> None:
    from toolkit.label import export_labels

    result = export_labels(folder, out, copy=copy, classes=classes)
    counts = ", ".join(f"{name} {n}" for name, n in result.counts.items())
    click.echo(f"Exported {sum(result.counts.values())} image(s) to {result.out} ({counts}); "
               f"{result.linked} linked, {result.copied} copied, {result.skipped} skipped frame(s) left out.")
    if result.missing:
        click.echo(f"{len(result.missing)} labelled frame(s) are no longer in {folder} and were left out "
                   f"(first: {result.missing[0]}).", err=True)
    click.echo(f"Provenance: {result.provenance} (train --kfold groups folds by video)." if result.provenance
               else f"No frames.json in {folder}: folds cannot be grouped by source video.")


def _serve(folder, classes, bind, model, order, open_browser, quiet) -> None:
    import signal
    import time
    import webbrowser

    from firmware_host.preview import parse_bind
    from toolkit.label import LabelServer

    host, port = parse_bind(bind, option="--bind")
    server = LabelServer(folder, classes, host, port, model=model, order=order, progress=not quiet)
    with server:
        if not server.loopback:
            click.echo(f"Warning: {server.url} is reachable from the network, without authentication "
                       "or encryption. Bind 127.0.0.1 and use an SSH tunnel instead.", err=True)
        total, done = len(server.files), server.done()
        click.echo(f"Labelling {total} frame(s) in {folder} ({done} done): open {server.url}  (Ctrl-C to stop)")
        if open_browser:
            webbrowser.open(server.url)
        # Ctrl-C (and SIGTERM) stop the page even when this process was started with SIGINT ignored
        # (a parent that ignores it passes that on across exec).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler)
        try:
            while True:  # short sleeps: the handler runs within 0.5 s whichever thread the OS signalled
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        counts = ", ".join(f"{name} {n}" for name, n in server.store.counts().items())
        click.echo(f"\nStopped: {server.done()} of {total} frame(s) labelled ({counts}); "
                   f"saved in {server.store.path}.")
