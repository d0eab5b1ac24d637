"""A drive video: one road scene, a moving camera, fog that thickens and clears again."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from firmware_host._io import atomic_path, atomic_write_text, ensure_writable_dir
from firmware_host.errors import InputError, OutputError

from .folder import Size, parse_size
from .physics import CLASS_NAMES, apply_fog, beta_from_visibility, fog_class
from .scene import Scene, draw_scene, random_airlight, random_scene, sensor_readout

__all__ = ["DriveVideo", "fog_schedule", "render_drive_video"]

_VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


def fog_schedule(frames: int, clear_visibility: float = 5000.0, dense_visibility: float = 15.0) -> np.ndarray:
    """Visibility per frame for a drive into fog and out again (metres, ``(frames,)`` float64).

    log V follows a raised cosine from ``clear_visibility`` down to ``dense_visibility`` at the
    middle frame and back, so every class gets time in proportion to its span of log V.

    Raises:
        InputError: frames < 1 or visibilities not 0 < dense < clear.
    """
    if frames < 1:
        raise InputError(f"frames must be >= 1. Got {frames}.")
    if not 0 < dense_visibility < clear_visibility:
        raise InputError(
            f"Need 0 < dense_visibility < clear_visibility. Got {dense_visibility}, {clear_visibility}."
        )
    phase = np.arange(frames) / max(frames - 1, 1)
    depth_of_fog = (1 - np.cos(2 * np.pi * phase)) / 2  # 0 → 1 → 0
    lo, hi = math.log(dense_visibility), math.log(clear_visibility)
    return np.exp(hi - (hi - lo) * depth_of_fog)


@dataclass(frozen=True)
class DriveVideo:
    """A rendered drive video and its per-frame ground truth.

    Attributes:
        path: the video file.
        truth_path: JSON beside it (``<video stem>.json``) with every frame's visibility, β, class.
        fps: frames per second.
        size: ``(height, width)``.
        classes: per-frame class name.
        visibility: per-frame visibility in metres.
    """

    path: Path
    truth_path: Path
    fps: float
    size: Tuple[int, int]
    classes: Tuple[str, ...] = field(repr=False)
    visibility: Tuple[float, ...] = field(repr=False)

    @property
    def frame_count(self) -> int:
        return len(self.classes)


def render_drive_video(
    path,
    frames: Optional[int] = None,
    seconds: float = 20.0,
    fps: float = 10.0,
    size: Size = (240, 320),
    seed: int = 0,
    speed_mps: float = 15.0,
    clear_visibility: float = 20_000.0,
    dense_visibility: float = 15.0,
    progress: bool = True,
) -> DriveVideo:
    """Render a drive along a road while fog thickens from none to dense and clears again.

    One scene is laid out along the road; the camera moves at ``speed_mps``, vehicles move too,
    and the visibility follows :func:`fog_schedule`. The video is written with OpenCV
    (``.mp4`` → 'mp4v', ``.avi`` → 'MJPG', both readable back by opencv-python-headless) via a
    temporary file renamed into place; the per-frame truth is written to ``<stem>.json``.

    Args:
        path: output video, ``.mp4`` or ``.avi``.
        frames: number of frames (default ``seconds * fps``).
        seconds: duration when ``frames`` is not given.
        fps: frame rate.
        size: frame ``(height, width)``.
        seed: RNG seed for the scene, airlight and noise.
        speed_mps: camera speed.
        clear_visibility, dense_visibility: ends of the fog schedule (metres).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`DriveVideo`.

    Raises:
        OutputError: unsupported suffix, unwritable directory, or OpenCV cannot open the writer.
    """
    video = Path(path)
    suffix = video.suffix.lower()
    if suffix not in _VIDEO_CODECS:
        raise OutputError(
            f"Drive video must end with .mp4 or .avi (codecs {_VIDEO_CODECS}). Got '{video}'."
        )
    h, w = parse_size(size)
    n = int(frames) if frames is not None else int(round(seconds * fps))
    if fps <= 0:
        raise InputError(f"fps must be > 0. Got {fps}.")
    visibility = fog_schedule(n, clear_visibility, dense_visibility)
    ensure_writable_dir(video.parent if str(video.parent) else Path("."))
    rng = np.random.default_rng(seed)
    travel = speed_mps * n / fps
    scene = random_scene(rng, road_length=travel, camera_speed=speed_mps)
    airlight = random_airlight(rng)
    drive = _Drive(scene, airlight, (h, w), float(fps), speed_mps)
    truth = _write_video(video, _VIDEO_CODECS[suffix], drive, visibility, rng, progress)
    truth_path = video.with_suffix(".json")
    atomic_write_text(truth_path, json.dumps({
        "format": "edgecam-fog-drive",
        "version": 1,
        "video": video.name,
        "fps": fps,
        "size": [h, w],
        "seed": int(seed),
        "classes": list(CLASS_NAMES),
        "airlight": [round(float(a), 4) for a in airlight],
        "frames": truth,
    }, indent=1) + "\n")
    return DriveVideo(video, truth_path, float(fps), (h, w),
                      tuple(f["class"] for f in truth), tuple(float(v) for v in visibility))


@dataclass(frozen=True)
class _Drive:
    """What every frame of a drive shares: the scene, the airlight, the camera's size and motion."""

    scene: Scene
    airlight: np.ndarray
    size: Tuple[int, int]
    fps: float
    speed_mps: float


def _write_video(video: Path, codec: str, drive: _Drive, visibility: np.ndarray, rng, progress: bool) -> List[dict]:
    """Render and write every frame; return the per-frame truth.

    A hidden temporary beside the video, fsync'd and renamed when complete (``atomic_path``).
    """
    import cv2
    from tqdm.auto import tqdm

    h, w = drive.size
    with atomic_path(video) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), drive.fps, (w, h))
        try:
            if not writer.isOpened():
                raise OutputError(
                    f"OpenCV cannot write '{video}' with codec {codec!r}. Try the other "
                    "suffix (.mp4 or .avi)."
                )
            truth = []
            for i in tqdm(range(len(visibility)), desc="drive video", unit="frame", disable=not progress):
                t = i / drive.fps
                clear, depth = draw_scene(drive.scene, h, w, camera_z=drive.speed_mps * t, time=t)
                beta = beta_from_visibility(float(visibility[i]))
                frame = sensor_readout(rng, apply_fog(clear, depth, beta, drive.airlight))
                writer.write(np.ascontiguousarray(frame[..., ::-1]))
                truth.append({
                    "frame": i,
                    "time_s": round(t, 4),
                    "visibility_m": round(float(visibility[i]), 3),
                    "beta": beta,
                    "class": fog_class(float(visibility[i])),
                })
        finally:
            writer.release()
    return truth
