"""Score-CAM (Wang et al. 2020, Eq. 5–8, Algorithm 1).

Each channel ``A^k`` is upsampled to the input and min-max normalised into a mask ``H^k``
(the same ``firmware_host.cam`` resize/normalise as every heatmap); the masked input
``x ⊙ H^k`` is scored by the model, and the scores of class ``c`` over channels, put through
a softmax, are the channel weights: ``L^c = ReLU(Σ_k softmax_k(y^c(x ⊙ H^k)) A^k)``.

No gradient is used. The ``K`` masked inputs per image are run in batches of ``batch_size``.
The score is the target of the session (the logit by default, ``target="probability"``
for the paper's softmax output).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_host import cam as _cam

from ._base import CamMethod, Output


def _target_scores(session, logits: np.ndarray, cls: int, binary: bool) -> np.ndarray:
    if session.target == "probability":
        return session.probabilities(logits, binary)[:, cls]
    return logits[:, cls]


@dataclass(frozen=True)
class ScoreCAM(CamMethod):
    name = "scorecam"

    def run(self, session, x, class_index):
        from converters.reference import forward_logits

        A, logits, _, chosen, split = self.features(session, x, class_index)
        size = x.shape[1:3]
        forward = session.logits_forward()
        raw = np.zeros(A.shape[:3], np.float32)
        for i in range(len(x)):
            channels = np.moveaxis(A[i], -1, 0)  # (K, h, w)
            scores = []
            for part in session.chunks(len(channels)):
                masks = _cam.normalize(_cam.resize(channels[part], size))  # (k, H, W) in [0, 1]
                out = forward_logits(forward, x[i][None] * masks[..., None])
                scores.append(_target_scores(session, out, int(chosen[i]), split.binary))
            s = np.concatenate(scores).astype(np.float64)
            weights = np.exp(s - s.max())
            weights /= weights.sum()
            raw[i] = _cam.combine(A[i], weights.astype(np.float32))
        return Output(raw, logits, session.probabilities(logits, split.binary), chosen)
