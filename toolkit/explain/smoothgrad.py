"""SmoothGrad (Smilkov et al. 2017, Eq. 3) over any gradient method.

``M̂(x) = (1/n) Σ_s A(x + N(0, σ²))`` with ``σ = noise × (max(x) − min(x))`` per image: the
attribution ``A`` of the wrapped method (``base``: ``saliency``, ``guided_backprop``,
``integrated_gradients``) is averaged over ``samples`` noisy copies, then reduced to a map by
the wrapped method's own reduction. The class is the one explained at the clean ``x``. The
noise is seeded (``seed``) so maps are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from firmware_host.errors import InputError

from ._base import GradientMethod

GRADIENT_BASES = ("saliency", "guided_backprop", "integrated_gradients")


@dataclass(frozen=True)
class SmoothGrad(GradientMethod):
    """Options: ``base`` method name, ``samples``, ``noise`` level, ``seed``, ``base_kwargs``."""

    name = "smoothgrad"
    base: str = "saliency"
    samples: int = 16
    noise: float = 0.15
    seed: int = 0
    base_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def _base(self) -> GradientMethod:
        from . import METHODS

        if self.base not in GRADIENT_BASES:
            raise InputError(
                f"SmoothGrad wraps a gradient method: base must be one of {GRADIENT_BASES}. "
                f"Got: {self.base!r}."
            )
        return METHODS[self.base](**dict(self.base_kwargs))

    def gradients(self, session, x, class_index):
        from converters.reference import input_gradients

        if int(self.samples) < 1:
            raise InputError(f"SmoothGrad needs samples >= 1. Got: {self.samples}.")
        base = self._base()
        binary = session.split(features=False).binary
        logits, _, chosen, _ = input_gradients(session.logits_forward(), x, class_index, session.target, binary)
        rng = np.random.default_rng(self.seed)
        sigma = float(self.noise) * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
        total = np.zeros(x.shape, np.float64)
        for _ in range(int(self.samples)):
            noisy = x + rng.standard_normal(x.shape).astype(np.float32) * sigma[:, None, None, None].astype(np.float32)
            attribution, _, _, _ = base.gradients(session, noisy, chosen)
            total += attribution
        return (total / int(self.samples)).astype(np.float32), logits, chosen, {}

    def reduce(self, attribution):
        return self._base().reduce(attribution)
