"""Validate an edge model's heatmaps against full Grad-CAM of the Keras model, streaming.

The edge maps come from an :class:`EdgeSource` — the one thing that differs between modes:

* :class:`ImageFolderSource` (:func:`validate`) — a folder of images: the converted ``.tflite``
  runs through ``firmware_host`` on the host, exactly as on the device;
* :class:`RunLogSource` (:func:`validate_log`) — the JSONL telemetry that ``edgecam run`` wrote
  on a device: the CAMs the device actually produced, for the frames it saved (see
  :class:`RunLogReader`).

How a run goes (method, gates, batch size, faithfulness sample…) is one
:class:`ValidationOptions`; :func:`validate_source` runs any source with it.

For every image the full Grad-CAM is computed with ``toolkit.explain`` on the Keras model, for
the class whose edge map is compared (the Keras prediction in folder mode, the recorded class in
log mode). Both maps go through ``firmware_host.cam.heatmap`` — one post-processing path — and
are compared at feature-map resolution and at input resolution with :mod:`toolkit.metrics`.
Faithfulness (deletion/insertion AUC) of both maps is scored with the Keras model.

Images are read, explained and dropped batch by batch: memory is O(batch_size), whatever the
number of images. Outputs (``summary.json``, ``per_image.csv``, ``report.html``) are written
atomically; their schema is in ``docs/validate.md``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import heapq
import itertools
import json
import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host import cam as _cam
from firmware_host._io import atomic_open, atomic_write_text, ensure_writable_dir
from firmware_host._version import __version__
from firmware_host.errors import InputError, MetadataError, SourceError
from firmware_host.preprocess import preprocess
from firmware_host.telemetry import BadRecord, RunHeader, TelemetryRecord, read_records
from firmware_host.imageio import is_image_file, read_image, scan_images

from . import metrics as M

__all__ = [
    "ValidationResult",
    "LogFrame",
    "RunLogReader",
    "ValidationOptions",
    "EdgeSource",
    "EdgeMaps",
    "SourceItem",
    "ImageFolderSource",
    "RunLogSource",
    "HostModel",
    "validate",
    "validate_log",
    "validate_source",
    "iter_image_files",
    "read_rgb",
    "CSV_COLUMNS",
    "csv_cell",
    "csv_text",
    "SCHEMA_VERSION",
]

SCHEMA_VERSION = 1
MAP_METRICS = tuple(f.name for f in M.MapMetrics.__dataclass_fields__.values())
# per_image.csv columns, in order (docs/validate.md documents each one).
CSV_COLUMNS = (
    ("index", "image", "frame", "keras_class", "keras_label", "keras_confidence", "edge_class",
     "edge_label", "edge_confidence", "cam_class", "top1_agree", "prob_max_abs_diff")
    + MAP_METRICS
    + tuple("in_" + m for m in MAP_METRICS)
    + ("deletion_auc_edge", "deletion_auc_full", "insertion_auc_edge", "insertion_auc_full")
    + ("pointing_edge", "pointing_full", "energy_in_box_edge", "energy_in_box_full", "box_area")
)
_THUMB = 192  # longest side of the images kept for the report's best/worst cases


@dataclass(frozen=True)
class ValidationResult:
    """What a validation run produced.

    Attributes:
        summary: the ``summary.json`` content.
        passed: every threshold that was set is met (True when none was set).
        out_dir: the output directory.
        summary_path / per_image_path / report_path: the files written.
    """

    summary: Mapping[str, Any]
    passed: bool
    out_dir: Path
    summary_path: Path
    per_image_path: Path
    report_path: Optional[Path]

    @property
    def verdict(self) -> str:
        """``PASS``, ``FAIL`` or ``NO GATE`` (no threshold set)."""
        return str(self.summary["verdict"])

    def describe(self) -> str:
        """A few human lines: the verdict, each check, the headline numbers."""
        s = self.summary
        lines = [f"{self.verdict}: {s['images']} images, top-1 agreement {s['top1_agreement']:.4f}, "
                 f"Pearson median {_fmt_stat(s['pearson'], 'median')} "
                 f"(p05 {_fmt_stat(s['pearson'], 'p05')}), "
                 f"SSIM median {_fmt_stat(s['ssim'], 'median')}, "
                 f"top-20% IoU median {_fmt_stat(s['iou_top20'], 'median')}"]
        if s.get("pearson_p05_by_class"):
            lines.append("  Pearson p05 by class: " + ", ".join(f"{k} {v:.4f}" for k, v in s["pearson_p05_by_class"].items()))
        if s.get("boxes") and s["boxes"]["images"]:
            b = s["boxes"]
            lines.append(f"  boxes ({b['images']} images): pointing game edge {b['pointing_game']['edge']:.3f}, "
                         f"full {b['pointing_game']['full']:.3f}; energy in box median edge "
                         f"{_fmt_stat(b['energy_in_box']['edge'], 'median')}, full "
                         f"{_fmt_stat(b['energy_in_box']['full'], 'median')} (box area "
                         f"{_fmt_stat(b['box_area'], 'median')})")
        for c in s["checks"]:
            mark = "ok  " if c["passed"] else "FAIL"
            lines.append(f"  [{mark}] {c['name']} = {c['value']:.4f} (needs >= {c['threshold']})")
        for w in s.get("warnings", []):
            lines.append(f"  warning: {w}")
        lines.append(f"  report: {self.report_path}")
        return "\n".join(lines)


def _fmt_stat(stats: Mapping, key: str) -> str:
    v = stats.get(key)
    return "n/a" if v is None else f"{v:.4f}"


# -- reading images ----------------------------------------------------------------------------
def iter_image_files(root: Union[str, Path]) -> List[Path]:
    """Every regular, non-hidden file below ``root``, sorted by relative path.

    The images of :func:`firmware_host.imageio.scan_images` (the one listing rule of every
    command), then the other files, which :func:`read_rgb` cannot decode and so are counted as
    skipped.

    Raises:
        SourceError: ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"--images '{root}' is not a directory. Pass a folder of images.")
    listing = scan_images(root, recursive=True)
    return list(listing.images + listing.others)


def read_rgb(path: Union[str, Path]) -> Optional[np.ndarray]:
    """Decode an image file to ``(H, W, 3)`` RGB uint8; ``None`` if it is not a readable image.

    :func:`firmware_host.imageio.read_image`, shared by every edgecam image reader: the format
    comes from the file's signature (a stray video or archive is not loaded), and files it
    refuses — including headers claiming more pixels than the limit — give ``None``.
    """
    return read_image(path, rgb=True)


# -- the device log ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LogFrame:
    """One usable record of an ``edgecam run`` JSONL log.

    Attributes:
        frame: frame number (``frame``).
        timestamp: ``timestamp`` as recorded (seconds or ISO string), or None.
        class_index: the class the recorded CAM explains.
        predicted_index: the device's top-1 (``predicted_index``, else argmax of
            ``probabilities``).
        probabilities: ``(K,)`` float32 recorded probabilities.
        cam: ``(h, w)`` float32 recorded CAM (ReLU'd, feature-map resolution).
        frame_path: path of the saved frame image, inside the log's folder.
        line: 1-based line number in the log, for messages.
    """

    frame: int
    timestamp: Any
    class_index: int
    predicted_index: int
    probabilities: np.ndarray
    cam: np.ndarray
    frame_path: Path
    line: int


class RunLogReader:
    """Tolerant reader of ``edgecam run`` telemetry (one JSON object per line).

    Lines are parsed by :func:`firmware_host.telemetry.read_records`, the one reader of run logs,
    so a record is good here exactly when it is good for ``edgecam run`` and ``sinks.read_jsonl``.
    Fields relied on (docs/validate.md): ``frame`` (int), ``class_index`` (int),
    ``probabilities`` (list of K floats), ``cam`` (h×w nested list), ``frame_path`` (image path
    relative to the log's directory); ``predicted_index`` (else the argmax of
    ``probabilities``), ``timestamp`` and ``peak`` are read if present.
    Unknown keys are ignored. Records are skipped, and counted in :attr:`skipped`, when they are
    not JSON objects (``malformed``), have no ``frame_path`` (``no_frame_path``: the device saves
    every Nth frame only), lack or break a required field, disagree with the model's shapes or
    name a frame outside the log's folder (``invalid``). A missing or unreadable frame image is
    counted by the validator (``unreadable``). The run header ``edgecam run`` writes first is
    not a record: after iterating, :attr:`header` holds it (None for logs written before it).

    Args:
        path: the ``.jsonl`` file.
        feature_map_shape: ``(h, w)`` the recorded CAMs must have, or None to accept any.
        num_classes: K the probabilities must have, or None.

    Raises:
        SourceError: the log does not exist (InputError when iterating: it cannot be read).
    """

    def __init__(
        self,
        path: Union[str, Path],
        feature_map_shape: Optional[Tuple[int, int]] = None,
        num_classes: Optional[int] = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(
                f"Run log '{self.path}' does not exist or is not a file. Pass the JSONL written "
                "by `edgecam run --log`."
            )
        self.feature_map_shape = None if feature_map_shape is None else tuple(feature_map_shape[:2])
        self.num_classes = num_classes
        self.skipped: Dict[str, int] = {"malformed": 0, "no_frame_path": 0, "invalid": 0}
        self.records = 0
        self.header: Optional[RunHeader] = None

    def count_saved_frames(self) -> int:
        """Lines that mention ``frame_path``: a cheap upper bound of the frames to validate."""
        with open(self.path, "rb") as handle:
            return sum(1 for line in handle if b'"frame_path"' in line)

    def __iter__(self) -> Iterator[LogFrame]:
        # The one tolerant reader of run logs (firmware_host.telemetry): the same rules as
        # `edgecam run` and sinks.read_jsonl. Raises InputError only if the file cannot be read.
        records = read_records(self.path, num_classes=self.num_classes, cam_shape=self.feature_map_shape,
                               require_finite=True, headers=True)
        for record in records:
            if isinstance(record, RunHeader):
                self.header = self.header or record
                continue
            self.records += 1
            frame = self._frame(record)
            if isinstance(frame, str):
                self.skipped[frame] += 1
            else:
                yield frame

    def _frame(self, record: Union[TelemetryRecord, BadRecord]) -> Union[LogFrame, str]:
        """A record as a :class:`LogFrame`, or the name of the reason it is skipped."""
        if isinstance(record, BadRecord):
            return "invalid" if record.reason == "invalid" else "malformed"  # malformed, not_object
        if not record.frame_path:
            return "no_frame_path"
        # Only a frame inside the log's folder: an absolute path, a '..' that climbs out or a
        # symlink that leads out would let a crafted log put any host image into report.html.
        path = record.frame_file(self.path.parent)
        if path is None:
            return "invalid"
        return LogFrame(
            frame=record.frame,
            timestamp=record.timestamp,
            class_index=record.class_index,
            predicted_index=record.predicted_index,
            probabilities=record.probabilities.astype(np.float32),
            cam=_cam.relu(record.cam.astype(np.float32)),
            frame_path=path,
            line=record.line,
        )


# -- the host (Keras) side ---------------------------------------------------------------------
class HostModel:
    """The Keras model: probabilities and full Grad-CAM maps at the explanation layer."""

    def __init__(self, keras_model, method: str, target_layer: Optional[str], safe_mode: bool = True) -> None:
        self.model = _load_keras(keras_model, safe_mode)
        self.name = str(keras_model) if isinstance(keras_model, (str, os.PathLike)) else getattr(
            self.model, "name", "keras model"
        )
        self.method = method
        self.layer = _resolve_layer(self.model, target_layer)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(N, H, W, C)`` float32 → ``(N, K)`` probabilities (a 1-unit sigmoid becomes 2)."""
        # predict_on_batch runs a compiled function: ~2x faster than an eager call on the many
        # small batches of the deletion/insertion curves.
        out = self.model.predict_on_batch(x)
        if isinstance(out, Mapping):
            out = next(iter(out.values()))
        elif isinstance(out, (list, tuple)):
            out = out[0]
        probs = np.asarray(out, dtype=np.float32)
        if probs.ndim == 2 and probs.shape[1] == 1:
            probs = np.concatenate([1.0 - probs, probs], axis=1)
        return probs

    def explain(self, x: np.ndarray, classes: Optional[np.ndarray], batch_size: int):
        """Full maps and what they explain, from one forward/backward pass.

        Args:
            x: ``(N, H, W, C)`` preprocessed inputs.
            classes: ``(N,)`` classes to explain, or None for the Keras prediction.

        Returns:
            ``(probabilities (N, K), explained classes (N,), raw ReLU'd maps (N, h, w))`` at the
            explanation layer's resolution.
        """
        from toolkit.explain import explain_full

        out = explain_full(
            self.model, x, method=self.method, target_layer=self.layer, class_index=classes,
            upsample=False, batch_size=batch_size,
        )
        return (np.asarray(out.probabilities, dtype=np.float32), np.asarray(out.class_index),
                _cam.relu(np.asarray(out.maps, dtype=np.float32)))


def _load_keras(keras_model, safe_mode: bool = True):
    if not isinstance(keras_model, (str, os.PathLike)):
        return keras_model
    from converters.loading import load_keras_model

    return load_keras_model(keras_model, safe_mode=safe_mode)


def _resolve_layer(model, target_layer: Optional[str]) -> str:
    """The path of the layer full Grad-CAM uses (the converter's automatic choice by default)."""
    from converters.layers import find_target

    return find_target(model, target_layer).path


# -- options -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationOptions:
    """How a validation runs, whatever the source of the edge maps.

    Attributes:
        method: the host explainer (a name in ``toolkit.explain.METHODS``).
        min_pearson: gate: median feature-map Pearson must be at least this (None: no gate).
        min_top1: gate: top-1 agreement (edge vs Keras) must be at least this.
        min_p05: gate: the 5th percentile of the feature-map Pearson (the tail: foggy frames)
            must be at least this, overall and for every Keras class (``pearson_p05_by_class``).
        batch_size: images per batch (memory is O(batch_size)).
        faithfulness: also score deletion/insertion AUC of both maps (2 × 2 ×
            (faithfulness_steps + 1) Keras predictions per scored image).
        progress: show a tqdm progress bar on stderr.
        target_layer: layer of the full Grad-CAM; ``None`` picks it as ``edgecam convert``
            does (the last spatial layer), so a model converted at another layer shows up as a
            mismatch. Pass the edge's layer to compare at a custom conversion layer.
        faithfulness_steps: perturbation steps K of the deletion/insertion curves.
        faithfulness_images: score faithfulness on at most this many images, spread evenly
            over the run (every ceil(total / n)-th image); ``None`` scores every image.
        cases: how many worst and best images the report shows.
        pointing_tolerance: the pointing game's tolerance in pixels of the original image, when
            the source has ground-truth boxes (``boxes.json``).
        safe_mode: load a Keras model file with Keras' safe_mode (refuses Lambda layers that
            carry Python code); ``edgecam validate --unsafe`` turns it off.

    Raises:
        InputError: an unknown method, a threshold out of range, a batch size or step count < 1.
    """

    method: str = "gradcam"
    min_pearson: Optional[float] = None
    min_top1: Optional[float] = None
    batch_size: int = 16
    faithfulness: bool = True
    progress: bool = True
    target_layer: Optional[str] = None
    faithfulness_steps: int = 16
    faithfulness_images: Optional[int] = 50
    cases: int = 4
    safe_mode: bool = True
    min_p05: Optional[float] = None
    pointing_tolerance: float = M.POINTING_TOLERANCE_PX

    def __post_init__(self) -> None:
        import toolkit.explain as explainers

        methods = getattr(explainers, "METHODS", None)
        if methods is not None and self.method not in methods:
            raise InputError(f"Unknown method {self.method!r}. Choose one of: {', '.join(sorted(methods))}.")
        if self.min_pearson is not None and not -1.0 <= float(self.min_pearson) <= 1.0:
            raise InputError(f"min_pearson must be in [-1, 1]. Got {self.min_pearson}.")
        if self.min_p05 is not None and not -1.0 <= float(self.min_p05) <= 1.0:
            raise InputError(f"min_p05 must be in [-1, 1]. Got {self.min_p05}.")
        if self.min_top1 is not None and not 0.0 <= float(self.min_top1) <= 1.0:
            raise InputError(f"min_top1 is a fraction in [0, 1]. Got {self.min_top1}.")
        if self.batch_size < 1 or self.faithfulness_steps < 1:
            raise InputError(f"batch_size and faithfulness_steps must be >= 1. Got {self.batch_size} "
                             f"and {self.faithfulness_steps}.")

    @classmethod
    def of(cls, options: Optional["ValidationOptions"] = None, **overrides: Any) -> "ValidationOptions":
        """``options`` (default: the defaults) with some fields replaced by keyword.

        Raises:
            TypeError: ``options`` is not a :class:`ValidationOptions`, or a keyword is no field.
        """
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"options must be a ValidationOptions, not {type(options).__name__}; pass "
                            "method, thresholds and the rest by keyword.")
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}. Valid: "
                            f"{', '.join(f.name for f in fields(cls))}.")
        return replace(options if options is not None else cls(), **overrides)

    @property
    def thresholds(self) -> Dict[str, Optional[float]]:
        """The gates, by summary name."""
        return {"min_pearson": self.min_pearson, "min_top1": self.min_top1, "min_p05": self.min_p05}


# -- sources of edge maps ----------------------------------------------------------------------
@dataclass(frozen=True)
class SourceItem:
    """One image of an :class:`EdgeSource`.

    Attributes:
        name: how per_image.csv and the report name it (a path relative to the source).
        image: ``(H, W, 3)`` RGB uint8.
        frame: what a device recorded for it (:class:`RunLogSource`), else None.
    """

    name: str
    image: np.ndarray
    frame: Optional[LogFrame] = None


@dataclass(frozen=True)
class EdgeMaps:
    """The edge side of one batch of N items.

    Attributes:
        probabilities: ``(N, K)`` edge class probabilities.
        predicted: ``(N,)`` the edge model's top-1.
        classes: ``(N,)`` the class each edge CAM explains.
        cams: ``(N, h, w)`` raw (ReLU'd) edge CAMs at feature-map resolution.
    """

    probabilities: np.ndarray
    predicted: np.ndarray
    classes: np.ndarray
    cams: np.ndarray


class EdgeSource:
    """Where the edge maps come from: the one thing that differs between validation modes.

    A source lists its items (an image plus, for recorded maps, what the device recorded), tells
    which class the host must explain, and gives the edge side of each batch. Everything else —
    the Keras side, metrics, outputs — is shared (:func:`validate_source`).

    Attributes:
        mode: the summary's ``mode``.
        location: the folder or file the items come from (the summary's ``source``).
        total: how many items at most, known up front (progress bar, faithfulness sample).
        empty_hint: how to fix a source that gave no usable image.
        class_mismatch_warning: the summary's warning when some edge maps explain another class
            than the Keras prediction, or None when that is expected.
    """

    mode: str = ""
    location: Path
    total: int = 0
    #: item name → its ground-truth boxes (``toolkit.datasets.boxes``), or None when unknown.
    boxes: Optional[Mapping[str, Sequence[Any]]] = None
    empty_hint: str = "Pass a folder of JPEG/PNG images."
    class_mismatch_warning: Optional[str] = None

    def bind(self, edge) -> None:
        """Called once the edge model is open (a source may check itself against its metadata)."""

    def items(self, read: Callable[..., Optional[np.ndarray]]) -> Iterator[SourceItem]:
        """The items, with images read through ``read(path, decode=True)`` (None: unreadable,
        already counted; ``decode=False`` counts a file known not to be an image without reading it)."""
        raise NotImplementedError

    @property
    def skipped(self) -> Dict[str, int]:
        """The source's own skip counters (the summary's ``skipped`` adds ``unreadable``)."""
        return {}

    def recorded_classes(self, items: Sequence[SourceItem]) -> Optional[np.ndarray]:
        """``(N,)`` classes the host must explain, or None for the Keras prediction."""
        return None

    def edge_maps(self, edge, items: Sequence[SourceItem], keras_classes: np.ndarray) -> EdgeMaps:
        """The edge side of a batch; ``keras_classes`` are the Keras model's top-1."""
        raise NotImplementedError


class ImageFolderSource(EdgeSource):
    """A folder of images, run through the edge model on the host exactly as on the device.

    ``boxes``: a ``boxes.json`` (``toolkit.datasets.boxes``) for the pointing game and energy in
    box; by default ``root/boxes.json`` when there is one.

    Raises:
        SourceError: ``root`` is not a directory. InputError: the boxes file is malformed.
    """

    mode = "images"
    class_mismatch_warning = (
        "the edge model could not explain the Keras class for some images (no class "
        "weights); their maps compare the edge's predicted class"
    )

    def __init__(self, root: Union[str, Path], boxes: Union[str, Path, None] = None) -> None:
        from toolkit.datasets.boxes import read_boxes

        self.location = Path(root)
        self.files = iter_image_files(self.location)
        self.total = len(self.files)
        # Ground truth for the pointing game: --boxes, else the folder's own boxes.json.
        found = self.location / "boxes.json" if boxes is None else Path(boxes)
        self.boxes = read_boxes(found) if boxes is not None or found.is_file() else None

    def items(self, read):
        for path in self.files:
            image = read(path, decode=is_image_file(path))  # non-image names: skipped, not decoded
            if image is not None:
                yield SourceItem(path.relative_to(self.location).as_posix(), image)

    def edge_maps(self, edge, items, keras_classes):
        images = [it.image for it in items]
        try:
            exps = edge.explain_batch(images, class_index=keras_classes)
        except MetadataError:
            # A 'predicted'-output model without class weights can only explain its own
            # prediction; compare that class's maps then (cam_class records which).
            exps = edge.explain_batch(images)
        return EdgeMaps(np.stack([e.probabilities for e in exps]), np.array([e.predicted_index for e in exps]),
                        np.array([e.class_index for e in exps]), np.stack([e.cam for e in exps]))


class RunLogSource(EdgeSource):
    """The JSONL an ``edgecam run`` wrote on a device: the maps the device actually produced.

    The host explains the recorded class; frames without a saved image are skipped.

    Raises:
        SourceError: the log does not exist.
    """

    mode = "log"
    empty_hint = "Pass a folder of JPEG/PNG images or a log whose records have frame_path."

    def __init__(self, log_path: Union[str, Path]) -> None:
        self.location = Path(log_path)
        self.reader = RunLogReader(self.location)  # fails early on a missing log
        self.total = self.reader.count_saved_frames()

    def bind(self, edge) -> None:
        meta = edge.metadata
        self.reader = RunLogReader(self.location, meta.feature_map_shape[:2], meta.num_classes)

    def items(self, read):
        base = self.reader.path.parent
        for frame in self.reader:
            image = read(frame.frame_path)
            if image is not None:
                yield SourceItem(frame.frame_path.relative_to(base).as_posix(), image, frame)

    @property
    def skipped(self) -> Dict[str, int]:
        return dict(self.reader.skipped)

    def recorded_classes(self, items):
        return np.array([it.frame.class_index for it in items])

    def edge_maps(self, edge, items, keras_classes):
        frames = [it.frame for it in items]
        return EdgeMaps(np.stack([f.probabilities for f in frames]), np.array([f.predicted_index for f in frames]),
                        np.array([f.class_index for f in frames]), np.stack([f.cam for f in frames]))


# -- the run -----------------------------------------------------------------------------------
def _batches(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _thumbnail(image: np.ndarray) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    scale = _THUMB / max(h, w)
    if scale >= 1:
        return image.copy()
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


class _Cases:
    """The k worst and k best images by feature-map Pearson, kept as thumbnails (bounded memory)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._worst: list = []  # max-heap on pearson via negation: keeps the k lowest
        self._best: list = []  # min-heap: keeps the k highest
        self._tick = itertools.count()

    def offer(self, score: float, make: Callable[[], dict]) -> None:
        if self.k <= 0 or not math.isfinite(score):
            return
        tick = next(self._tick)
        data = None  # built at most once, and only for an image that makes it into a heap
        for heap, key in ((self._worst, -score), (self._best, score)):
            if len(heap) < self.k or key > heap[0][0]:
                data = data if data is not None else make()
                (heapq.heappush if len(heap) < self.k else heapq.heapreplace)(heap, (key, tick, data))

    def cases(self) -> list:
        from toolkit.report import ReportCase

        worst = sorted(self._worst, key=lambda t: -t[0])
        shown = {t for _, t, _ in worst}  # with few images, one can be both worst and best
        best = [e for e in sorted(self._best, key=lambda t: -t[0]) if e[1] not in shown]
        out = []
        for group, entries in (("worst cases (lowest Pearson)", worst), ("best cases (highest Pearson)", best)):
            out.extend(ReportCase(group=group, **data) for _, _, data in entries)
        return out


class _Run:
    """Accumulates per-image records over batches and writes the outputs."""

    def __init__(self, edge, host, source: EdgeSource, out_dir: Path, options: ValidationOptions) -> None:
        self.edge = edge
        self.host = host
        self.meta = edge.metadata
        self.source = source
        self.out_dir = out_dir
        self.options = options
        self.batch_size = options.batch_size
        self.faithfulness = options.faithfulness and options.faithfulness_images != 0
        self.steps = options.faithfulness_steps
        # Faithfulness costs 4·(steps+1) model passes per image: score an evenly spread sample.
        n, total = options.faithfulness_images, source.total
        self.faith_left = n
        # Image k·total/N for k < N (floored): N images evenly over a run of known length.
        self.faith_pick = {k * total // n for k in range(n)} if total and n and total > n else None
        self.cases = _Cases(options.cases)
        self.records: List[Dict[str, Any]] = []
        self.unreadable = 0
        self.fm_size = tuple(int(v) for v in self.meta.feature_map_shape[:2])
        self.in_size = tuple(int(v) for v in edge.input_size)
        self.full_fm_size: Optional[Tuple[int, int]] = None

    @property
    def skipped(self) -> Dict[str, int]:
        return {"unreadable": self.unreadable, **self.source.skipped}

    # -- per batch ---------------------------------------------------------------------------
    def read(self, path: Path, decode: bool = True) -> Optional[np.ndarray]:
        """The image at ``path`` as RGB uint8, or None (counted as ``unreadable``; also when not ``decode``)."""
        image = read_rgb(path) if decode else None
        if image is None:
            self.unreadable += 1
        return image

    def process(self, items: Sequence[SourceItem]) -> None:
        x = np.stack([preprocess(it.image, self.meta.preprocessing) for it in items]).astype(np.float32)
        # The Keras prediction and its full map come from one pass, for the class the source
        # recorded a map of (None: the Keras prediction).
        keras_probs, explained, full_raw = self.host.explain(x, self.source.recorded_classes(items), self.batch_size)
        edge = self.source.edge_maps(self.edge, items, keras_probs.argmax(axis=1))
        if edge.probabilities.shape != keras_probs.shape:
            raise InputError(
                f"The edge model gives {edge.probabilities.shape[1]} class probabilities but the Keras "
                f"model gives {keras_probs.shape[1]}: they are not the same model. Pass the Keras "
                "model that was converted."
            )
        redo = np.flatnonzero(edge.classes != explained)
        if redo.size:  # the edge explained another class (see ImageFolderSource): match it
            full_raw[redo] = self.host.explain(x[redo], edge.classes[redo], self.batch_size)[2]
        self.full_fm_size = tuple(full_raw.shape[1:3])
        # One post-processing path for both maps (firmware_host.cam). The edge grid is the
        # feature-map resolution; a full map from another layer is resized onto it.
        maps = {"edge_fm": _cam.heatmap(edge.cams), "full_fm": _cam.heatmap(full_raw, self.fm_size),
                "edge_in": _cam.heatmap(edge.cams, self.in_size), "full_in": _cam.heatmap(full_raw, self.in_size)}
        faith = self._faithfulness(x, maps["edge_in"], maps["full_in"], edge.classes)
        for i, it in enumerate(items):
            self._record(it, i, keras_probs[i], edge, maps, faith.get(i, {}))

    def _record(self, it: SourceItem, i: int, keras_probs: np.ndarray, edge: EdgeMaps, maps, faith) -> None:
        """Compare item ``i`` of the batch, and write its row."""
        classes = self.meta.classes
        label = lambda c: classes[c] if c < len(classes) else str(c)  # noqa: E731
        fm = M.compare_maps(maps["edge_fm"][i], maps["full_fm"][i])
        inr = M.compare_maps(maps["edge_in"][i], maps["full_in"][i], cells=self.fm_size)
        kc, ec = int(keras_probs.argmax()), int(edge.predicted[i])
        rec: Dict[str, Any] = {
            "index": len(self.records),
            "image": it.name,
            "frame": "" if it.frame is None else it.frame.frame,
            "keras_class": kc,
            "keras_label": label(kc),
            "keras_confidence": float(keras_probs[kc]),
            "edge_class": ec,
            "edge_label": label(ec),
            "edge_confidence": float(edge.probabilities[i, ec]),
            "cam_class": int(edge.classes[i]),
            "top1_agree": int(kc == ec),
            "prob_max_abs_diff": float(np.max(np.abs(edge.probabilities[i] - keras_probs))),
            **fm.as_dict(),
            **inr.as_dict("in_"),
            **faith,
            **self._box_scores(it, maps, i),
        }
        self.records.append(rec)
        self.writer.writerow({k: csv_cell(rec.get(k, "")) for k in CSV_COLUMNS})
        self.cases.offer(fm.pearson, lambda: {
            "name": it.name,
            "image": _thumbnail(it.image),
            "edge_heat": maps["edge_fm"][i].copy(),
            "full_heat": maps["full_fm"][i].copy(),
            "metrics": dict(fm.as_dict()),
            "caption": (f"keras: {rec['keras_label']} {rec['keras_confidence']:.2f} · edge: "
                        f"{rec['edge_label']} {rec['edge_confidence']:.2f}"
                        + ("" if rec["cam_class"] == kc else f" · maps of class {rec['cam_class']}")),
        })

    def _box_scores(self, it: SourceItem, maps, i: int) -> Dict[str, float]:
        """Pointing game and energy in box of both maps at input resolution (images with boxes)."""
        boxes = (self.source.boxes or {}).get(it.name)
        if not boxes:
            return {}
        scaled = M.scale_boxes([b.box for b in boxes], it.image.shape[:2], self.in_size)
        # The tolerance is in the image's pixels: the same share of the image at input size.
        tolerance = self.options.pointing_tolerance * self.in_size[1] / it.image.shape[1]
        out: Dict[str, float] = {}
        for side in ("edge", "full"):
            scores = M.box_scores(maps[f"{side}_in"][i], scaled, tolerance)
            out[f"pointing_{side}"], out[f"energy_in_box_{side}"] = scores.pointing, scores.energy
            out["box_area"] = scores.area
        return out

    def _faithfulness(self, x, edge_in, full_in, classes) -> Dict[int, Dict[str, float]]:
        """Deletion/insertion AUC of both maps for this batch's sampled images, by position."""
        if not self.faithfulness:
            return {}
        first = len(self.records)
        chosen = [i for i in range(len(x)) if self.faith_pick is None or first + i in self.faith_pick]
        if self.faith_left is not None:
            chosen = chosen[: self.faith_left]
            self.faith_left -= len(chosen)
        if not chosen:
            return {}
        idx = np.asarray(chosen)
        scores = {}
        for side, heat in (("edge", edge_in), ("full", full_in)):
            # Perturbed copies are many: 4 batches' worth per model call.
            f = M.faithfulness(self.host.predict, x[idx], heat[idx], classes[idx], steps=self.steps,
                               batch_size=4 * self.batch_size)
            scores[f"deletion_auc_{side}"] = f.deletion_auc
            scores[f"insertion_auc_{side}"] = f.insertion_auc
        return {i: {k: float(v[j]) for k, v in scores.items()} for j, i in enumerate(chosen)}

    # -- whole run ---------------------------------------------------------------------------
    def run(self, items: Iterable[SourceItem]) -> ValidationResult:
        from tqdm.auto import tqdm

        per_image = self.out_dir / "per_image.csv"
        with atomic_open(per_image, "w") as handle, tqdm(
            total=self.source.total, unit="img", desc="validate", disable=not self.options.progress
        ) as bar:
            self.writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            self.writer.writeheader()
            for batch in _batches(items, self.batch_size):
                self.process(batch)
                bar.update(len(batch))
            if not self.records:
                skipped = ", ".join(f"{v} {k}" for k, v in self.skipped.items() if v) or "none"
                raise InputError(
                    f"No usable image in {self.source.location} (skipped: {skipped}). {self.source.empty_hint}"
                )
        summary = self.summary()
        summary_path = atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        from toolkit.report import write_report

        report = write_report(self.out_dir / "report.html", summary, self.records, self.cases.cases())
        return ValidationResult(
            summary=summary, passed=bool(summary["passed"]), out_dir=self.out_dir,
            summary_path=summary_path, per_image_path=per_image, report_path=report,
        )

    def summary(self) -> Dict[str, Any]:
        meta = self.meta
        col = lambda key: [r[key] for r in self.records if key in r]  # noqa: E731
        top1 = float(np.mean(col("top1_agree")))
        out: Dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "edgecam_version": __version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "mode": self.source.mode,
            "source": str(self.source.location),
            "keras_model": self.host.name,
            "edge_model": str(getattr(self.edge, "path", "")),
            "method": self.host.method,
            "edge_target_layer": meta.target_layer,
            "full_target_layer": self.host.layer,
            "feature_map_shape": list(self.fm_size),
            "full_feature_map_shape": list(self.full_fm_size or self.fm_size),
            "input_size": list(self.in_size),
            "cam_mode": meta.cam_mode,
            "quantization": meta.quantization,
            "images": len(self.records),
            "skipped": dict(self.skipped),
            "top1_agreement": top1,
            "prob_max_abs_diff": M.summarize(col("prob_max_abs_diff")),
        }
        for name in MAP_METRICS:
            out[name] = M.summarize(col(name))
        out["input_resolution"] = {name: M.summarize(col("in_" + name)) for name in MAP_METRICS}
        out["pearson_p05_by_class"] = _p05_by_class(self.records)
        out["boxes"] = None
        if self.source.boxes is not None:
            out["boxes"] = {
                "images": len(col("pointing_edge")),
                "tolerance_px": self.options.pointing_tolerance,
                "pointing_game": {side: M.summarize(col(f"pointing_{side}"))["mean"] for side in ("edge", "full")},
                "energy_in_box": {side: M.summarize(col(f"energy_in_box_{side}")) for side in ("edge", "full")},
                "box_area": M.summarize(col("box_area")),
            }
        out["faithfulness"] = None
        if self.faithfulness:
            out["faithfulness"] = {
                "images": len(col("deletion_auc_edge")),
                "steps": self.steps,
                "baseline": "blur",
                "judge": "keras",
                **{side: {kind: M.summarize(col(f"{kind}_{side}")) for kind in ("deletion_auc", "insertion_auc")}
                   for side in ("edge", "full")},
            }
        warnings = []
        if self.host.layer is not None and self.host.layer != meta.target_layer:
            warnings.append(
                f"the edge model explains layer {meta.target_layer!r} but full Grad-CAM uses "
                f"{self.host.layer!r}; pass --target-layer {meta.target_layer} to compare at the "
                "converter's layer"
            )
        mismatch = self.source.class_mismatch_warning
        if mismatch and any(r["cam_class"] != r["keras_class"] for r in self.records):
            warnings.append(mismatch)
        out["warnings"] = warnings
        out.update(_verdict(out, self.options.thresholds))
        return out


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection"):
# an image or class name from a device could. Such text cells get a leading apostrophe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(v: Any) -> Any:
    """A per_image.csv cell: floats in full precision, text made inert for spreadsheets.

    Numbers stay numbers (``-0.5`` is written as is); only text that starts with ``= + - @``
    (or a tab / carriage return) is prefixed with ``'``, and so is text that starts with ``'``
    itself, so that :func:`csv_text` can undo it exactly.
    """
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    if isinstance(v, str) and v.startswith(_FORMULA_START + ("'",)):
        return "'" + v
    return v


def csv_text(cell: str) -> str:
    """The text :func:`csv_cell` was given, from the cell it wrote (for reading a CSV back)."""
    if cell.startswith("'") and cell[1:].startswith(_FORMULA_START + ("'",)):
        return cell[1:]
    return cell


def _p05_by_class(records: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """5th percentile of the feature-map Pearson per Keras class (finite values only)."""
    groups: Dict[str, List[float]] = {}
    for r in records:
        value = r.get("pearson")
        if value is not None and math.isfinite(value):
            groups.setdefault(str(r["keras_label"]), []).append(float(value))
    return {k: round(float(np.percentile(v, 5)), 6) for k, v in sorted(groups.items())}


def _verdict(summary: Mapping[str, Any], thresholds: Mapping[str, Optional[float]]) -> Dict[str, Any]:
    """``thresholds``, ``checks``, ``passed`` and ``verdict`` of the summary."""
    checks = []
    if thresholds.get("min_pearson") is not None:
        value = summary["pearson"]["median"]
        checks.append({"name": "pearson.median", "value": value,
                       "threshold": float(thresholds["min_pearson"]),
                       "passed": value is not None and value >= float(thresholds["min_pearson"])})
    if thresholds.get("min_p05") is not None:
        bound = float(thresholds["min_p05"])
        # The tail, overall and per class: an average over classes hides exactly the foggy ones.
        for name, value in [("pearson.p05", summary["pearson"]["p05"]),
                            *((f"pearson.p05[{k}]", v) for k, v in summary.get("pearson_p05_by_class", {}).items())]:
            checks.append({"name": name, "value": value, "threshold": bound,
                           "passed": value is not None and value >= bound})
    if thresholds.get("min_top1") is not None:
        value = summary["top1_agreement"]
        checks.append({"name": "top1_agreement", "value": value,
                       "threshold": float(thresholds["min_top1"]),
                       "passed": value >= float(thresholds["min_top1"])})
    passed = all(c["passed"] for c in checks)
    verdict = "NO GATE" if not checks else ("PASS" if passed else "FAIL")
    keys = ("min_pearson", "min_top1") + (("min_p05",) if thresholds.get("min_p05") is not None else ())
    return {"thresholds": {k: thresholds.get(k) for k in keys},
            "checks": checks, "passed": passed, "verdict": verdict}


def _open(edge_model_path, keras_model, method, target_layer, safe_mode: bool = True):
    from firmware_host import ExplainableModel

    edge = ExplainableModel(edge_model_path)
    if isinstance(keras_model, (str, os.PathLike)) and str(keras_model).lower().endswith(".onnx"):  # no TensorFlow
        from converters.onnx_in.host import OnnxHostModel

        return edge, OnnxHostModel(keras_model, method, target_layer)
    host = HostModel(keras_model, method, target_layer, safe_mode)
    return edge, host


def validate_source(
    keras_model,
    edge_model_path: Union[str, Path],
    source: EdgeSource,
    out_dir: Union[str, Path],
    options: Optional[ValidationOptions] = None,
    **overrides: Any,
) -> ValidationResult:
    """Compare the edge maps of ``source`` with full Grad-CAM of the Keras model.

    Args:
        keras_model: the Keras model that was converted (a ``keras.Model`` or a path).
        edge_model_path: the converted ``.tflite`` (its metadata: classes, preprocessing,
            feature-map shape; and the edge maps for an :class:`ImageFolderSource`).
        source: where the edge maps come from (:class:`ImageFolderSource`, :class:`RunLogSource`).
        out_dir: where ``summary.json``, ``per_image.csv`` and ``report.html`` go.
        options: a :class:`ValidationOptions` (default: its defaults).
        **overrides: fields of :class:`ValidationOptions` by keyword (``min_pearson=0.9``…).

    Returns:
        A :class:`ValidationResult`; ``passed`` is False when a threshold fails.

    Raises:
        InputError: no usable image, bad options, or the models do not match.
        OutputError: ``out_dir`` is not writable.
        ModelFileError / MetadataError / LayerError: the models cannot be loaded or explained.
    """
    opts = ValidationOptions.of(options, **overrides)
    out = ensure_writable_dir(out_dir)
    edge, host = _open(edge_model_path, keras_model, opts.method, opts.target_layer, opts.safe_mode)
    source.bind(edge)
    run = _Run(edge, host, source, out, opts)
    return run.run(source.items(run.read))


def validate(
    keras_model,
    edge_model_path: Union[str, Path],
    images_dir: Union[str, Path],
    out_dir: Union[str, Path],
    options: Optional[ValidationOptions] = None,
    **overrides: Any,
) -> ValidationResult:
    """Compare the edge model's heatmaps with full Grad-CAM over a folder of images.

    Args:
        keras_model: the Keras model that was converted (a ``keras.Model`` or a path).
        edge_model_path: the converted ``.tflite``.
        images_dir: folder of images (searched recursively; non-images are skipped and counted).
        out_dir: where ``summary.json``, ``per_image.csv`` and ``report.html`` go.
        options: a :class:`ValidationOptions` (default: its defaults).
        **overrides: its fields by keyword: ``method``, ``min_pearson``, ``min_top1``,
            ``batch_size``, ``faithfulness``, ``progress``, ``target_layer``,
            ``faithfulness_steps``, ``faithfulness_images``, ``cases``, ``safe_mode``.

    Returns:
        A :class:`ValidationResult`; ``passed`` is False when a threshold fails.

    Raises:
        SourceError: ``images_dir`` is not a folder.
        InputError: no readable image, bad thresholds, or the models do not match.
        OutputError: ``out_dir`` is not writable.
        ModelFileError / MetadataError / LayerError: the models cannot be loaded or explained.
    """
    source = ImageFolderSource(images_dir)
    return validate_source(keras_model, edge_model_path, source, out_dir, options, **overrides)


def validate_log(
    keras_model,
    edge_model_path: Union[str, Path],
    log_path: Union[str, Path],
    out_dir: Union[str, Path],
    options: Optional[ValidationOptions] = None,
    **overrides: Any,
) -> ValidationResult:
    """Compare the CAMs a device recorded (``edgecam run`` JSONL) with full Grad-CAM.

    The edge model file gives the metadata (classes, preprocessing, feature-map shape); the
    edge maps, probabilities and classes are the recorded ones. Full Grad-CAM explains the
    recorded ``class_index``; top-1 agreement compares the recorded ``predicted_index`` (else
    ``argmax(probabilities)``) with the Keras prediction on the saved frame. Arguments as
    :func:`validate`, with ``log_path`` the JSONL file; records without ``frame_path``, or whose
    ``frame_path`` leads outside the log's folder, are skipped and counted (``skipped``).
    """
    source = RunLogSource(log_path)
    return validate_source(keras_model, edge_model_path, source, out_dir, options, **overrides)
