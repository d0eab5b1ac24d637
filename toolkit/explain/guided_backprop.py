"""Guided backpropagation (Springenberg et al. 2015, §3.4).

The input gradient of the class score through a copy of the network whose ReLUs pass back only
positive gradients at positive inputs (``_guided.py``); the map is ``max_c |g|``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._base import GradientMethod


@dataclass(frozen=True)
class GuidedBackprop(GradientMethod):
    name = "guided_backprop"

    def forward(self, session):
        return session.guided_forward()
