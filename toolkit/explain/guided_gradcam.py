"""Guided Grad-CAM (Selvaraju et al. 2017, §3.1): guided backprop ⊙ upsampled Grad-CAM.

The fine-grained guided-backprop map is gated by the class-discriminative Grad-CAM heatmap
(ReLU'd, resized to the input and normalised by ``firmware_host.cam.heatmap``), both for the
same class.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_host import cam as _cam

from ._base import GradientMethod, Output
from .gradcam import GradCAM
from .guided_backprop import GuidedBackprop


@dataclass(frozen=True)
class GuidedGradCAM(GradientMethod):
    name = "guided_gradcam"

    def run(self, session, x, class_index):
        coarse = GradCAM().run(session, x, class_index)
        fine = GuidedBackprop().run(session, x, coarse.class_index)
        raw = fine.raw * _cam.heatmap(coarse.raw, x.shape[1:3])
        return Output(raw, coarse.logits, coarse.probabilities, coarse.class_index)

    def layer(self, session):
        return session.split().target.path
