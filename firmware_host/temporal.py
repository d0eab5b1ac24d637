"""Temporal smoothing and hysteresis for video: a steady fog level instead of flicker.

The exact rule (also in ``docs/run.md``), applied once per frame ``t``:

1. **EMA of probabilities.** ``s_t = alpha * s_{t-1} + (1 - alpha) * p_t`` with ``s_0 = p_0``.
   ``alpha`` in ``[0, 1)`` is the weight of the past: 0 turns smoothing off, 0.8 averages over
   roughly ``1 / (1 - alpha) = 5`` frames.
2. **Hysteresis on the shown class** ``c_t`` (``margin`` ≥ 0, ``frames`` ≥ 1). On the first
   frame ``c_0 = argmax s_0``. Afterwards let ``k = argmax s_t``. If ``k != c_{t-1}`` and
   ``s_t[k] - s_t[c_{t-1}] >= margin``, ``k`` is a *challenger*; a counter counts consecutive
   frames on which the same ``k`` is a challenger (any other frame resets it to 0). When the
   counter reaches ``frames``, ``c_t = k`` and the counter resets; otherwise ``c_t = c_{t-1}``.
   ``margin=0, frames=1`` (the default) makes ``c_t = argmax s_t``.
3. **EMA of heatmaps.** The CAM of the shown class, min-max normalised by
   :func:`firmware_host.cam.heatmap` at feature-map resolution, is averaged with the same
   ``alpha``: ``h_t = alpha * h_{t-1} + (1 - alpha) * heat_t``; the average restarts
   (``h_t = heat_t``) whenever the shown class changes, so maps of different classes never mix.

Non-finite probabilities or CAM values count as 0, so one bad frame cannot poison the averages.
The raw per-frame explanation is what gets logged (it is what ``edgecam validate --from-log``
checks); the filtered state is what is drawn, counted and snapshotted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from . import cam as _cam
from .errors import InputError

__all__ = ["TemporalState", "TemporalFilter", "parse_hysteresis"]


@dataclass(frozen=True)
class TemporalState:
    """The filtered view of one frame.

    Attributes:
        probabilities: ``(K,)`` float32 smoothed probabilities ``s_t``.
        class_index: the shown (hysteresis) class ``c_t``.
        heat: ``(h, w)`` float32 in [0, 1], smoothed heatmap of ``class_index``.
        changed: True when ``class_index`` differs from the previous frame's.
    """

    probabilities: np.ndarray
    class_index: int
    heat: np.ndarray
    changed: bool

    @property
    def confidence(self) -> float:
        return float(self.probabilities[self.class_index])


def _finite(x: np.ndarray) -> np.ndarray:
    """``x`` with NaN/±inf replaced by 0 (a copy only when needed: this runs every frame)."""
    return x if np.isfinite(x).all() else np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def parse_hysteresis(text: str) -> Tuple[float, int]:
    """``"MARGIN[:FRAMES]"`` → ``(margin, frames)``, e.g. ``"0.1:3"``.

    Raises:
        InputError: not of that form, margin < 0 or frames < 1.
    """
    parts = str(text).split(":")
    try:
        margin = float(parts[0])
        frames = int(parts[1]) if len(parts) > 1 else 1
        if len(parts) > 2:
            raise ValueError
    except ValueError:
        raise InputError(
            f"--hysteresis takes MARGIN[:FRAMES], e.g. 0.1:3 (margin of probability, consecutive "
            f"frames). Got: {str(text)[:60]!r}"
        ) from None
    _check(0.0, margin, frames)
    return margin, frames


#: Largest ``FRAMES`` of ``--hysteresis`` (a finite bound; at 30 fps about 9 hours).
MAX_HYSTERESIS_FRAMES = 1_000_000


def _check(alpha: float, margin: float, frames: int) -> None:
    if not 0.0 <= alpha < 1.0:  # also refuses NaN
        raise InputError(f"--smooth ALPHA must be in [0, 1) (weight of the past). Got: {alpha}")
    if not (0.0 <= margin <= 1.0 and 1 <= frames <= MAX_HYSTERESIS_FRAMES):
        raise InputError(
            f"--hysteresis needs MARGIN in [0, 1] (a probability) and FRAMES in [1, "
            f"{MAX_HYSTERESIS_FRAMES}]. Got margin {margin}, frames {frames}."
        )


class TemporalFilter:
    """EMA smoothing + hysteresis, the rule in the module docstring.

    Args:
        alpha: weight of the past in the EMAs, in ``[0, 1)``.
        margin: probability margin a challenger class must lead by.
        frames: consecutive frames it must lead for.
    """

    def __init__(self, alpha: float = 0.0, margin: float = 0.0, frames: int = 1) -> None:
        _check(alpha, margin, frames)
        self.alpha = float(alpha)
        self.margin = float(margin)
        self.frames = int(frames)
        self.reset()

    def reset(self) -> None:
        self._probs: Optional[np.ndarray] = None
        self._heat: Optional[np.ndarray] = None
        self._shown: Optional[int] = None
        self._challenger: Optional[int] = None
        self._count = 0

    @property
    def shown(self) -> Optional[int]:
        """The class currently shown (``None`` before the first frame)."""
        return self._shown

    def update_probabilities(self, probabilities: np.ndarray) -> Tuple[np.ndarray, int, bool]:
        """Steps 1–2: returns ``(smoothed probabilities, shown class, changed)``."""
        # A NaN/inf frame (a broken sensor frame, a numerically failing model) must not poison
        # the average for the rest of the run: non-finite values count as 0.
        p = _finite(np.asarray(probabilities, dtype=np.float32).reshape(-1))
        if self._probs is None or self._probs.shape != p.shape:
            self._probs = p.copy()
        else:
            self._probs = (self.alpha * self._probs + (1.0 - self.alpha) * p).astype(np.float32)
        s = self._probs
        best = int(np.argmax(s))
        if self._shown is None:
            self._shown = best
            return s.copy(), best, True
        previous = self._shown
        if best != previous and s[best] - s[previous] >= self.margin:
            self._count = self._count + 1 if self._challenger == best else 1
            self._challenger = best
            if self._count >= self.frames:
                self._shown, self._challenger, self._count = best, None, 0
        else:
            self._challenger, self._count = None, 0
        return s.copy(), self._shown, self._shown != previous

    def update_heat(self, cam: np.ndarray, restart: bool) -> np.ndarray:
        """Step 3: smoothed ``(h, w)`` heatmap in [0, 1] of the shown class."""
        heat = _cam.heatmap(_finite(np.asarray(cam, dtype=np.float32)))
        if restart or self._heat is None or self._heat.shape != heat.shape:
            self._heat = heat
        else:
            self._heat = (self.alpha * self._heat + (1.0 - self.alpha) * heat).astype(np.float32)
        return self._heat

    def update(self, probabilities: np.ndarray, cam: np.ndarray) -> TemporalState:
        """Steps 1–3 when ``cam`` is already the map of the class that will be shown."""
        s, shown, changed = self.update_probabilities(probabilities)
        return TemporalState(s, shown, self.update_heat(cam, changed), changed)
