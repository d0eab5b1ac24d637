"""``edgecam label``: label frames by keyboard in a local web page, then export a training dataset.

* :mod:`.store` — ``labels.csv`` (file, label, time), rewritten atomically after every keystroke;
* :mod:`.server` / :mod:`.page` — the page on 127.0.0.1 (the preview server's guards);
* :mod:`.guesses` — pre-labelling with a converted model: its guess, heatmap and uncertainty order;
* :mod:`.export` — the class-folder layout ``edgecam train`` reads, with the frames' provenance.

No TensorFlow: a labelling laptop needs only the base install.
"""

from .export import ExportResult, export_labels
from .guesses import ORDERS, guess_frames, serving_order
from .server import LabelServer, list_frames
from .store import (CLASSES_FILE, LABELS_FILE, SKIPPED, LabelRow, LabelStore, parse_classes, read_classes,
                    read_labels, write_classes)

__all__ = [
    "CLASSES_FILE",
    "LABELS_FILE",
    "ORDERS",
    "SKIPPED",
    "ExportResult",
    "LabelRow",
    "LabelServer",
    "LabelStore",
    "export_labels",
    "guess_frames",
    "list_frames",
    "parse_classes",
    "read_classes",
    "read_labels",
    "serving_order",
    "write_classes",
]
