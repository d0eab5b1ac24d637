"""edgecam's exceptions.

The library raises these; only the CLI turns them into ``click.ClickException``. Every message
states the rule, shows what was found, and says how to fix it.
"""

from __future__ import annotations

__all__ = [
    "EdgecamError",
    "MissingDependencyError",
    "ModelFileError",
    "MetadataError",
    "InputError",
    "LayerError",
    "UnsupportedHeadError",
    "ConversionError",
    "FidelityError",
    "SourceError",
    "OutputError",
    "DeployError",
]


class EdgecamError(Exception):
    """Base class of every error edgecam raises on purpose."""


class MissingDependencyError(EdgecamError, ImportError):
    """An optional dependency is needed for this operation and is not installed."""


class ModelFileError(EdgecamError):
    """A model file is missing, truncated, corrupt, or not the kind of file expected."""


class MetadataError(EdgecamError):
    """edgecam metadata is absent, corrupt, from a newer format, or fails its checksum."""


class InputError(EdgecamError, ValueError):
    """An image, batch or other argument has the wrong shape, dtype or values."""


class LayerError(EdgecamError):
    """The explanation layer cannot be found, or the named layer is not usable."""


class UnsupportedHeadError(EdgecamError):
    """The classifier head cannot be turned into an exact CAM head."""


class ConversionError(EdgecamError):
    """The LiteRT/ONNX conversion failed or produced a model the device cannot run."""


class FidelityError(ConversionError):
    """The converted model's maps or classes miss the fidelity bounds against the float model."""


class SourceError(EdgecamError):
    """A camera, video, folder or stream cannot be opened or read."""


class OutputError(EdgecamError):
    """An output location is not writable, or writing to it failed."""


class DeployError(EdgecamError):
    """A deployment bundle is invalid, unsafe or tampered, or installing it on a device failed."""
