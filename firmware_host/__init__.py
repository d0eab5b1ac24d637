"""edgecam's on-device runtime: LiteRT (or ONNX Runtime) + numpy + OpenCV, never TensorFlow."""

from ._version import __version__
from .errors import (
    EdgecamError,
    InputError,
    MetadataError,
    MissingDependencyError,
    ModelFileError,
)
from .formats import read_metadata, read_tflite_metadata
from .metadata import EdgecamMetadata, Preprocessing
from .model import ExplainableModel, Explanation, open_model

__all__ = [
    "__version__",
    "ExplainableModel",
    "Explanation",
    "open_model",
    "EdgecamMetadata",
    "Preprocessing",
    "read_metadata",
    "read_tflite_metadata",
    "EdgecamError",
    "InputError",
    "MetadataError",
    "MissingDependencyError",
    "ModelFileError",
]
