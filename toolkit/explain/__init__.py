"""Host explainers for Keras CNNs (and ViT-style attention models), batched on TensorFlow.

``toolkit.explain(model, images, method="gradcam")`` → ``(N, H, W)`` maps in [0, 1]. One small
module per method; ``METHODS`` (name → class) drives the CLI and the tests. Layer discovery and
the softmax split are the converter's (``converters.layers``), the gradient engine is the
converter's (``converters.reference``), and every heatmap is post-processed by
``firmware_host.cam`` — so host and edge maps go through identical code before being compared.

Importing this package does not import TensorFlow; running a method does.
"""

from __future__ import annotations

import sys
import types

from ._engine import Explanations, explain, explain_full
from .attention_rollout import AttentionRollout
from .eigencam import EigenCAM
from .gradcam import GradCAM
from .gradcam_pp import GradCAMPlusPlus
from .guided_backprop import GuidedBackprop
from .guided_gradcam import GuidedGradCAM
from .hirescam import HiResCAM
from .integrated_gradients import IntegratedGradients
from .layer_visualization import LayerVisualization
from .layercam import LayerCAM
from .saliency import Saliency
from .scorecam import ScoreCAM
from .smoothgrad import SmoothGrad

__all__ = ["explain", "explain_full", "Explanations", "METHODS", "methods_for"]

#: name → method class (a frozen dataclass whose fields are the method's options).
METHODS = {
    cls.name: cls
    for cls in (
        GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, EigenCAM,
        Saliency, GuidedBackprop, GuidedGradCAM, IntegratedGradients, SmoothGrad,
        LayerVisualization, AttentionRollout,
    )
}


def methods_for(model) -> list:
    """The registry methods that apply to ``model``: attention rollout and the gradient family
    for models with ``MultiHeadAttention`` layers, everything else for CNNs."""
    from .attention_rollout import attention_paths

    if attention_paths(model):
        return [n for n, c in METHODS.items() if c.family in ("attention", "gradient") and n != "guided_gradcam"]
    return [n for n, c in METHODS.items() if c.family != "attention"]


class _CallableModule(types.ModuleType):
    """Lets ``toolkit.explain(model, images)`` call :func:`explain` while ``toolkit.explain``
    stays the package (``toolkit.explain.METHODS``)."""

    def __call__(self, *args, **kwargs):
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
