"""ONNX classifiers (e.g. exported from PyTorch) → explained ONNX, with the ``onnx`` package only.

``converters.convert("model.onnx", "out.onnx")`` and ``edgecam convert model.onnx -o out.onnx``
land in :func:`convert_onnx`. Modules: :mod:`.graph` (load, checks, the head chain),
:mod:`.ops` (one differentiation rule per operator), :mod:`.analysis` (CAM mode, folded
weights), :mod:`.build` (the in-graph head), :mod:`.check` (self-check), :mod:`.quantize` (int8),
:mod:`.approximate` (``--approximate``), :mod:`.tflite` (LiteRT through onnx2tf).
"""

from __future__ import annotations

__all__ = ["convert_onnx"]


def convert_onnx(model, output, **options):
    """See :func:`converters.onnx_in.convert.convert_onnx`."""
    from .convert import convert_onnx as run

    return run(model, output, **options)
