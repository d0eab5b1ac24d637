"""Helpers shared by the ``edgecam run`` / ``bench`` / preview tests (no TensorFlow needed)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI in a fresh interpreter where importing TensorFlow or Keras fails, then reports
# whether any module of theirs got imported anyway.
TF_BLOCKED_CLI = """
import sys
for name in ("tensorflow", "keras", "tf_keras"):
    sys.modules[name] = None
from toolkit.cli import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exc:
    code = exc.code or 0
leaked = sorted(m for m, mod in sys.modules.items()
                if m.split(".")[0] in ("tensorflow", "keras", "tf_keras") and mod is not None)
print("LEAKED:", leaked, file=sys.stderr)
sys.exit(code)
"""


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def python() -> str:
    return sys.executable


def frame_pattern(i: int, size: Tuple[int, int]) -> np.ndarray:
    """A BGR frame that changes from frame to frame: a moving bright disc on a gradient."""
    import cv2

    h, w = size
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 200, w, dtype=np.uint8)[None, :]
    img[..., 1] = (i * 11) % 256
    cv2.circle(img, (int(8 + (i * 5) % (w - 16)), h // 2), max(3, h // 8), (255, 255, 255), -1)
    return img


def write_video(path: Path, frames: int, size: Tuple[int, int] = (64, 80), fps: float = 10.0) -> Path:
    """A Motion-JPEG .avi written with cv2.VideoWriter."""
    import cv2

    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(frame_pattern(i, size))
    writer.release()
    return path


def read_video(path: Path) -> List[np.ndarray]:
    """Every frame OpenCV decodes from ``path`` (BGR)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"OpenCV cannot open {path}"
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@dataclass(frozen=True)
class FakeExplanation:
    """Just what the telemetry writer reads from an :class:`~firmware_host.Explanation`."""

    probabilities: np.ndarray
    class_index: int
    predicted_index: int
    label: str
    cam: np.ndarray
    latency_ms: float = 1.5

    @property
    def confidence(self):
        return float(self.probabilities[self.class_index])

    def peak(self):
        from firmware_host import cam

        return cam.peak(self.cam)
