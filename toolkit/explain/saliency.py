"""Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman 2013, §3.1).

``M_ij = max_c |∂y^c/∂x_ijc|``: how much a small change of each pixel changes the class score.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._base import GradientMethod


@dataclass(frozen=True)
class Saliency(GradientMethod):
    name = "saliency"
