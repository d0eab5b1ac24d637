"""Integrated gradients (Sundararajan, Taly & Yan 2017, Eq. 1 and §3 "Computing").

``IG_i(x) = (x_i − x'_i) · ∫_0^1 ∂F(x' + α(x − x'))/∂x_i dα``, the integral by the trapezoid
rule on ``steps`` intervals. Completeness (Prop. 1): ``Σ_i IG_i = F(x) − F(x')``; the relative
error ``|Σ IG − (F(x) − F(x'))| / |F(x) − F(x')|`` is reported per image in
``info["completeness_error"]`` (raise ``steps`` until it is below ~1%).

The class is fixed to the one explained at ``x`` along the whole path. The map is the sum of
the attribution over colour channels (ReLU'd by the shared post-processing: positive evidence).

Baselines ``x'``: ``"zeros"`` (all-zero model input), ``"blur"`` (the image Gaussian-blurred
with σ = ``blur_sigma`` × its size, a "no detail" reference), a number, or an array
broadcastable to one image ``(H, W, C)`` — e.g. the model input of a black image, which the
CLI computes from the preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware_host.errors import InputError

from ._base import GradientMethod


def make_baseline(x: np.ndarray, baseline: Any, blur_sigma: float = 0.1) -> np.ndarray:
    """``(n, H, W, C)`` baselines for ``x`` (never a view of ``x``)."""
    if isinstance(baseline, str):
        if baseline == "zeros":
            return np.zeros_like(x)
        if baseline == "blur":
            import cv2

            sigma = max(1.0, blur_sigma * max(x.shape[1:3]))
            blurred = [cv2.GaussianBlur(img, (0, 0), sigma).reshape(img.shape) for img in x]
            return np.stack(blurred).astype(np.float32)
        raise InputError(
            f"Integrated-gradients baseline must be 'zeros', 'blur', a number or an array. "
            f"Got: {baseline!r}."
        )
    try:
        return np.broadcast_to(np.asarray(baseline, dtype=np.float32), x.shape).copy()
    except ValueError as exc:
        raise InputError(
            f"Integrated-gradients baseline of shape {np.shape(baseline)} does not broadcast to "
            f"the inputs {x.shape}. Pass a number, a per-channel (C,) or an (H, W, C) array."
        ) from exc


@dataclass(frozen=True)
class IntegratedGradients(GradientMethod):
    """Options: ``steps`` (trapezoid intervals), ``baseline``, ``blur_sigma``."""

    name = "integrated_gradients"
    steps: int = 64
    baseline: Any = "zeros"
    blur_sigma: float = 0.1

    def gradients(self, session, x, class_index):
        from converters.reference import input_gradients

        if int(self.steps) < 1:
            raise InputError(f"Integrated gradients needs steps >= 1. Got: {self.steps}.")
        forward = self.forward(session)
        binary = session.split(features=False).binary
        base = make_baseline(x, self.baseline, self.blur_sigma)
        n, m = len(x), int(self.steps)
        alphas = np.linspace(0.0, 1.0, m + 1, dtype=np.float32)
        # Trapezoid weights: half weight at both ends of the path.
        weights = np.full(m + 1, 1.0 / m)
        weights[[0, -1]] *= 0.5
        # The explained class comes from x itself, then stays fixed along the path.
        logits, _, chosen, _ = input_gradients(forward, x, class_index, session.target, binary)
        total = np.zeros(x.shape, np.float64)
        ends = np.zeros((n, 2))
        pairs = [(i, k) for i in range(n) for k in range(m + 1)]
        for part in session.chunks(len(pairs)):
            idx = np.array([p[0] for p in pairs[part]])
            step = np.array([p[1] for p in pairs[part]])
            a = alphas[step][:, None, None, None]
            points = base[idx] + a * (x[idx] - base[idx])
            _, grads, _, score = input_gradients(forward, points, chosen[idx], session.target, binary)
            np.add.at(total, idx, grads * weights[step][:, None, None, None])
            for j in np.flatnonzero(step == 0):
                ends[idx[j], 0] = score[j]
            for j in np.flatnonzero(step == m):
                ends[idx[j], 1] = score[j]
        attribution = (x - base) * total
        delta = ends[:, 1] - ends[:, 0]
        gap = np.abs(attribution.sum(axis=(1, 2, 3)) - delta)
        error = gap / np.maximum(np.abs(delta), 1e-12)
        info = {"completeness_error": error.astype(np.float32), "score_delta": delta.astype(np.float32)}
        return attribution.astype(np.float32), logits, chosen, info

    def reduce(self, attribution):
        return attribution.sum(axis=-1)
