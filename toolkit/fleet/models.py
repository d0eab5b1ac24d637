"""The models a fleet ran: Keras files matched to run logs by hash, and what scoring needs of each.

A run log names its model by hash (``edgecam run`` writes the source Keras file's sha256, else
the model file's, in its header and in every record). ``--keras M.keras`` files are matched by
the sha256 of their bytes, which the converter records as ``metadata.source["sha256"]``; an
``--edge M.tflite`` (optional) is matched to its Keras file by that field, and also answers to
its own file hash. Its metadata gives the preprocessing, class names and map size exactly as on
the device (what ``edgecam validate --from-log`` uses); without it they are detected from the
Keras model as ``edgecam convert`` does by default.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

from firmware_host.errors import InputError
from firmware_host.metadata import Preprocessing

__all__ = ["ModelSpec", "file_sha256", "load_specs", "spec_from_keras"]

PathLike = Union[str, Path]


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes, read in chunks (a log of any size in constant memory).

    Raises:
        InputError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(chunk), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"Cannot read '{path}': {exc.strerror or exc}.") from exc
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """One Keras model of the fleet, and how its logged frames are scored.

    Attributes:
        sha256: sha256 (hex) of the Keras file: the key logs are matched by.
        keras: the Keras file.
        name: a short name for reports (the file name).
        preprocessing: how a saved frame becomes the model's input.
        classes: class names, by index.
        feature_map_shape: ``(h, w)`` of the logged CAMs.
        edge: the converted model the preprocessing and classes come from, or None.
        aliases: other hashes that name this model (the edge model file's sha256).
    """

    sha256: str
    keras: str
    name: str
    preprocessing: Preprocessing
    classes: Tuple[str, ...]
    feature_map_shape: Tuple[int, int]
    edge: Optional[str] = None
    aliases: Tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def spec_from_keras(keras: PathLike, sha256: str, target_layer: Optional[str] = None,
                    safe_mode: bool = True) -> ModelSpec:
    """A :class:`ModelSpec` from the Keras model alone (loads it: needs TensorFlow).

    The preprocessing and class names are what ``edgecam convert`` records by default
    (``converters.export.detect_preprocessing``, ``class_<i>``); the map size is the explanation
    layer's.
    """
    from converters.export import detect_preprocessing, read_labels
    from converters.layers import find_target
    from converters.loading import load_keras_model

    model = load_keras_model(keras, safe_mode=safe_mode)
    logging.getLogger("converters.export").setLevel(logging.ERROR)  # "assuming pixels/255" once per model
    pre, _ = detect_preprocessing(model)
    units = int(model.outputs[0].shape[-1])
    classes = read_labels(None, 2 if units == 1 else units, units == 1)
    shape = find_target(model, target_layer).shape
    return ModelSpec(sha256, str(keras), Path(keras).name, pre, tuple(classes), (int(shape[0]), int(shape[1])))


def _spec_from_edge(keras: PathLike, sha256: str, edge: PathLike, meta, edge_sha: str) -> ModelSpec:
    return ModelSpec(sha256, str(keras), Path(keras).name, meta.preprocessing, tuple(meta.classes),
                     tuple(int(v) for v in meta.feature_map_shape[:2]), str(edge), (edge_sha,))


def _edges_by_source(edges: Iterable[PathLike]) -> Dict[str, Tuple[Path, object, str]]:
    """``{source sha256: (edge path, metadata, edge file sha256)}``; an edge without a source hash is an error."""
    from firmware_host.formats import read_metadata

    out = {}
    for edge in edges:
        meta = read_metadata(edge)
        source = (meta.source or {}).get("sha256") if isinstance(meta.source, Mapping) else None
        if not source:
            raise InputError(f"--edge '{edge}' records no source-model sha256 in its metadata, so it cannot be "
                             "matched to a --keras file. Re-convert it with this edgecam, or leave it out.")
        out[str(source)] = (Path(edge), meta, file_sha256(edge))
    return out


def load_specs(keras: Sequence[PathLike], edges: Sequence[PathLike] = (), target_layer: Optional[str] = None,
               safe_mode: bool = True) -> Dict[str, ModelSpec]:
    """``{sha256: ModelSpec}`` of the ``--keras`` files, each matched to its ``--edge`` file if given.

    Raises:
        InputError: no model, an unreadable file, or an ``--edge`` converted from none of the ``--keras``.
    """
    if not keras:
        raise InputError("fleet validate needs at least one --keras MODEL.keras (the models the fleet ran).")
    by_source = _edges_by_source(edges)
    specs: Dict[str, ModelSpec] = {}
    for path in keras:
        sha = file_sha256(path)
        if sha in by_source:
            edge, meta, edge_sha = by_source.pop(sha)
            specs[sha] = _spec_from_edge(path, sha, edge, meta, edge_sha)
        else:
            specs[sha] = spec_from_keras(path, sha, target_layer, safe_mode)
    if by_source:
        edge, meta, _ = next(iter(by_source.values()))
        raise InputError(f"--edge '{edge}' was converted from {meta.source.get('name', '?')!r} (sha256 "
                         f"{next(iter(by_source))[:12]}…), which is none of the --keras files. Pass that Keras "
                         "file too, or leave the edge model out.")
    return specs
