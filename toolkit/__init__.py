"""edgecam host toolkit: full explainers, validation, reports, datasets, training, the CLI.

Heavy dependencies (TensorFlow, matplotlib) are imported lazily by the functions that need them.
``toolkit.explain(model, images, method=...)`` is the host explainer (see ``toolkit.explain``).
"""

import importlib

from firmware_host._version import __version__

__all__ = ["__version__", "explain"]


def __getattr__(name):
    # Lazy: `import toolkit` stays instant; the explain package is callable (explain(...)).
    if name == "explain":
        return importlib.import_module("toolkit.explain")
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
