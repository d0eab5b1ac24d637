"""``edgecam run``: explained inference on a camera, video, folder or stream (device path, no TensorFlow)."""

from __future__ import annotations

import json

import click

from ._common import cli_errors
from ._runconfig import config_option


@click.command("run")
@config_option
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--source", "-s", required=True,
              help="Camera index (0), /dev/videoN, video file, image folder or glob, "
              "rtsp://…/http://… URL, or GStreamer pipeline (contains '!').")
@click.option("--out-video", type=click.Path(dir_okay=False),
              help="Annotated video: .avi (Motion-JPEG, survives power cuts) or .mp4.")
@click.option("--video-fps", type=click.FloatRange(min=0, min_open=True),
              help="Frame rate written into --out-video (default: the source's, else 15).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False),
              help="JSONL telemetry, one record per frame (input of edgecam validate --from-log).")
@click.option("--save-frames", default=0, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="Save every Nth frame beside the log (1 = all, 0 = none) for validation.")
@click.option("--frame-format", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True,
              help="Format of saved frames (png is lossless).")
@click.option("--fsync-every", default=1, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="fsync the log every N records (1: a power cut loses at most the last record).")
@click.option("--log-max-mb", type=click.FloatRange(min=1), help="Disk budget of the log and its frames; "
              "older segments are rotated out.")
@click.option("--snapshots", type=click.Path(file_okay=False),
              help="Directory for frame + overlay JPEGs on every class change and every --snapshot-every s.")
@click.option("--snapshot-every", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between periodic snapshots (0: only on class changes).")
@click.option("--snapshot-max-mb", default=100.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Disk budget of --snapshots; the oldest are deleted.")
@click.option("--preview", metavar="[HOST:]PORT",
              help="MJPEG live preview over HTTP; binds 127.0.0.1 unless HOST is given.")
@click.option("--show", is_flag=True, help="Open a window where a display exists (headless by default).")
@click.option("--smooth", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True),
              metavar="ALPHA", help="EMA of probabilities and heatmaps; ALPHA = weight of the past (0: off).")
@click.option("--hysteresis", default="0:1", show_default=True, metavar="MARGIN[:FRAMES]",
              help="Change the shown class only when a new class leads by MARGIN for FRAMES frames in a row.")
@click.option("--realtime", is_flag=True, help="Read files at their own frame rate and drop stale frames, like a camera.")
@click.option("--loop", is_flag=True, help="Restart video files and folders at their end.")
@click.option("--reconnect-attempts", default=8, show_default=True, type=click.IntRange(min=0),
              help="Reopenings of a lost camera/stream (backoff 0.5 s doubling to 10 s) before giving up.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Interpreter threads (default: the runtime's).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after N frames.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one line of JSON.")
def run_cmd(model, source, out_video, video_fps, log_path, save_frames, frame_format, fsync_every,
            log_max_mb, snapshots, snapshot_every, snapshot_max_mb, preview, show, smooth, hysteresis,
            realtime, loop, reconnect_attempts, threads, max_frames, as_json):
    """Explain every frame of --source with MODEL (.tflite or .onnx); stop with Ctrl-C or SIGTERM.

    Writes what was asked for (annotated video, JSONL log + frames, snapshots, live preview)
    and prints a summary: frames, dropped, corrupt, fps, latency p50/p95, class histogram.
    """
    from firmware_host.errors import EdgecamError
    from firmware_host.runner import run

    def started(outputs):
        if "preview" in outputs:
            click.echo(f"preview: {outputs['preview']}", err=True)
        click.echo("running; Ctrl-C or SIGTERM stops cleanly", err=True)

    def report(summary):
        click.echo(json.dumps(summary.to_dict()) if as_json else summary.format())

    with cli_errors():
        try:
            summary = run(
                model, source, out_video=out_video, video_fps=video_fps, log=log_path,
                save_frames=save_frames, frame_format=frame_format, fsync_every=fsync_every,
                log_max_mb=log_max_mb, snapshots=snapshots, snapshot_every=snapshot_every,
                snapshot_max_mb=snapshot_max_mb, preview=preview, show=show, smooth=smooth,
                hysteresis=hysteresis, realtime=realtime, loop=loop,
                reconnect_attempts=reconnect_attempts, num_threads=threads, max_frames=max_frames,
                handle_signals=True, on_start=started,
            )
        except EdgecamError as exc:
            if getattr(exc, "summary", None) is not None:
                report(exc.summary)  # what was done before the source was lost
            raise
    report(summary)
