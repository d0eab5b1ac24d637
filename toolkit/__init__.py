"""edgecam host toolkit: full explainers, validation, reports, datasets, training, the CLI.

Heavy dependencies (TensorFlow, matplotlib) are imported lazily by the functions that need them.
"""

from firmware_host._version import __version__

__all__ = ["__version__"]
