"""Export Keras CNNs to LiteRT and ONNX with an in-graph explanation head (needs TensorFlow).

Heavy imports happen on first use: ``import converters`` alone does not load TensorFlow.
"""

from __future__ import annotations

__all__ = ["convert", "ConversionResult", "split_model", "find_target", "load_keras_model"]

_LAZY = {
    "convert": "converters.export",
    "ConversionResult": "converters.export",
    "split_model": "converters.layers",
    "find_target": "converters.layers",
    "load_keras_model": "converters.loading",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        try:
            module = importlib.import_module(_LAZY[name])
        except ImportError as exc:
            if "tensorflow" in str(exc) or "keras" in str(exc):
                from firmware_host.errors import MissingDependencyError

                raise MissingDependencyError(
                    "Converting needs TensorFlow and Keras. Install the host extra: "
                    "pip install 'edgecam[host]'"
                ) from exc
            raise
        return getattr(module, name)
    raise AttributeError(f"module 'converters' has no attribute {name!r}")
