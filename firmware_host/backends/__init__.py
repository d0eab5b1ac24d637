"""Interpreter backends. Chosen from the model file; heavy imports happen only when used."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from ._base import Backend, TensorInfo

__all__ = ["Backend", "TensorInfo", "open_backend"]


def open_backend(path: Union[str, Path], num_threads=None) -> Backend:
    """Open the right backend for ``path`` (``.tflite`` → LiteRT)."""
    from .litert import LiteRTBackend

    return LiteRTBackend(path, num_threads=num_threads)
