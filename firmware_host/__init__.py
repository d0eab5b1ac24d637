"""edgecam's on-device runtime: LiteRT (or ONNX Runtime) + numpy + OpenCV, never TensorFlow."""

from ._version import __version__
from .errors import (
    EdgecamError,
    InputError,
    MetadataError,
    MissingDependencyError,
    ModelFileError,
)
from .metadata import EdgecamMetadata, Preprocessing, read_metadata, read_tflite_metadata
from .model import ExplainableModel, Explanation

__all__ = [
    "__version__",
    "ExplainableModel",
    "Explanation",
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
