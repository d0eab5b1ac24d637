"""``edgecam frames``: extract frames for labelling from videos or a run log (numpy + OpenCV)."""

from __future__ import annotations

import re

import click

from toolkit.cli._common import cli_errors


def _size(ctx, param, value):
    """``WxH`` (or ``N`` for a square) → ``(height, width)``."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*", value)
    if not match:
        raise click.BadParameter(f"expected WxH such as 320x180, or N for a square. Got {value!r}.")
    w = int(match.group(1))
    h = int(match.group(2) or w)
    if min(w, h) < 8 or max(w, h) > 8192:
        raise click.BadParameter(f"each side must be 8–8192 pixels. Got {w}x{h}.")
    return h, w


@click.command("frames")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder for the frames and frames.json (re-running into it adds nothing twice).")
@click.option("--every", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds between kept frames [default: 1 for videos; every saved frame of a run log].")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Kept frames per second of video (instead of --every).")
@click.option("--dedupe", type=click.IntRange(0, 64), default=None, metavar="BITS",
              help="Skip a frame whose 64-bit dHash is within BITS of the last kept frame of its video "
                   "(0 = same hash; 5 skips a still camera's sensor noise). See docs/labelling.md.")
@click.option("--size", callback=_size, default=None, metavar="WxH",
              help="Resize the written frames (centre-cropped to the aspect ratio first).")
@click.option("--format", "image_format", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def frames(inputs, out_dir, every, fps, dedupe, size, image_format, quiet):
    """Extract frames to label from VIDEO files, folders of videos, or `edgecam run` logs (.jsonl).

    Every frame is listed in OUT/frames.json with its video, frame index and time in seconds,
    so each label traces back to its video and moment. A video that cannot be read is reported
    and skipped. See docs/labelling.md.
    """
    from toolkit.frames import FramesOptions, extract_frames

    with cli_errors():
        options = FramesOptions(every=every, fps=fps, dedupe=dedupe, size=size, image_format=image_format)
        result = extract_frames(inputs, out_dir, options, progress=not quiet)
    for item in result.skipped:
        click.echo(f"Skipped '{item.path}': {item.reason}.", err=True)
    for s in result.inputs:
        dup = f", {s.duplicates} near-duplicates skipped" if dedupe is not None else ""
        bad = f", {s.unreadable} undecodable" if s.unreadable else ""
        click.echo(f"{s.video}: {s.read} frames read, {s.sampled} sampled{dup}{bad}, {s.written} written")
    click.echo(f"Wrote {result.written} frames to {result.out_dir}; {result.index_path} lists {result.total}.")
