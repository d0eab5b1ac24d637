"""Score logged frames against full Grad-CAM: the per-frame computation of both engines.

:class:`FrameScorer` takes a numpy batch of rows (the columns :class:`toolkit.fleet.logs.FleetLog`
yields) and returns it with the scoring columns added. It is the computation of ``edgecam
validate --from-log`` (:mod:`toolkit.validate`), frame by frame: the saved frame is preprocessed
as the edge model's metadata says, :class:`toolkit.validate.HostModel` explains the *recorded*
class with full Grad-CAM at the explanation layer, both maps go through
``firmware_host.cam.heatmap`` (the full map resized onto the logged CAM's grid) and are compared
with :func:`toolkit.metrics.pearson`; top-1 agreement compares the device's ``predicted_index``
with the Keras prediction.

A scorer is rebuilt from its constructor arguments when pickled (a Ray actor builds one per
worker with ``fn_constructor_kwargs``); it loads each Keras model once, on first use.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from firmware_host import cam as _cam
from firmware_host.preprocess import preprocess

from .models import ModelSpec, spec_from_keras

__all__ = ["FrameScorer", "SCORE_COLUMNS"]

#: Columns a scorer adds to each row.
SCORE_COLUMNS = ("host_class", "host_probability", "full_cam", "pearson", "top1_agree", "status")


class FrameScorer:
    """Full Grad-CAM of each frame of a batch, and how the logged map agrees with it.

    Args:
        models: ``{sha256: Keras file}``: the fleet's models, by the hash rows name in ``model``.
        method: the host explainer (``toolkit.explain.METHODS``).
        batch_size: frames per Grad-CAM pass.
        specs: ``{sha256: ModelSpec}`` (``FleetPlan.models``): preprocessing, classes and map size;
            detected from each Keras model when missing.
        target_layer: layer of the full Grad-CAM (default: the converter's choice).
        safe_mode: load Keras files with Keras' ``safe_mode``.

    Input columns (numpy, length N): ``model`` (str), ``frame_path`` (str), ``recorded_class``
    and ``edge_class`` (int), ``edge_cam`` (``(N, h, w)`` float32, or an object array of maps);
    others are passed through. Added: ``host_class`` (int, -1 when not scored),
    ``host_probability`` (float), ``full_cam`` (the full heatmap on the edge grid, [0, 1]),
    ``pearson`` (NaN when not scored), ``top1_agree`` (bool) and ``status`` (``ok``,
    ``unreadable``: the frame image cannot be decoded, ``no_model``: no such model).
    """

    def __init__(self, models: Mapping[str, str], method: str = "gradcam", batch_size: int = 32,
                 specs: Optional[Mapping[str, ModelSpec]] = None, target_layer: Optional[str] = None,
                 safe_mode: bool = True) -> None:
        self._args = dict(models=dict(models), method=method, batch_size=int(batch_size),
                          specs=None if specs is None else dict(specs), target_layer=target_layer,
                          safe_mode=safe_mode)
        self.models = dict(models)
        self.method = method
        self.batch_size = int(batch_size)
        self.specs: Dict[str, ModelSpec] = dict(specs or {})
        self.target_layer = target_layer
        self.safe_mode = safe_mode
        self._hosts: Dict[str, Any] = {}

    def __reduce__(self):
        # Rebuilt from the constructor's arguments: loaded Keras models never cross processes.
        return (_rebuild, (self._args,))

    def host(self, sha: str):
        """The :class:`toolkit.validate.HostModel` of model ``sha``, loaded once."""
        if sha not in self._hosts:
            from toolkit.validate import HostModel

            self._hosts[sha] = HostModel(self.models[sha], self.method, self.target_layer, self.safe_mode)
        return self._hosts[sha]

    def spec(self, sha: str) -> ModelSpec:
        if sha not in self.specs:
            self.specs[sha] = spec_from_keras(self.models[sha], sha, self.target_layer, self.safe_mode)
        return self.specs[sha]

    def __call__(self, batch: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Score a batch (a dict of equal-length arrays); returns it with :data:`SCORE_COLUMNS` added."""
        from toolkit.validate import read_rgb

        out = {name: np.asarray(values) for name, values in batch.items()}
        n = len(out["frame_path"])
        cams = [np.asarray(c, dtype=np.float32) for c in out["edge_cam"]]
        scores = _Scores(n, cams)
        images = [read_rgb(str(p)) for p in out["frame_path"]]
        models = [str(m) for m in out["model"]]
        for sha in sorted(set(models)):
            rows = [i for i in range(n) if models[i] == sha]
            if sha not in self.models:
                scores.set_status(rows, "no_model")
                continue
            readable = [i for i in rows if images[i] is not None]
            scores.set_status([i for i in rows if images[i] is None], "unreadable")
            if readable:
                self._score(sha, readable, images, out, cams, scores)
        out.update(scores.columns())
        return out

    def _score(self, sha: str, rows: List[int], images, out, cams, scores: "_Scores") -> None:
        """Full Grad-CAM of the recorded classes of ``rows`` and their agreement (validate --from-log's)."""
        from toolkit.metrics import pearson

        spec = self.spec(sha)
        x = np.stack([preprocess(images[i], spec.preprocessing) for i in rows]).astype(np.float32)
        recorded = np.asarray(out["recorded_class"])[rows].astype(np.int64)
        probs, _, full_raw = self.host(sha).explain(x, recorded, self.batch_size)
        for j, i in enumerate(rows):
            edge = _cam.heatmap(cams[i])
            full = _cam.heatmap(full_raw[j], edge.shape)
            host_class = int(probs[j].argmax())
            scores.set(i, host_class, float(probs[j, host_class]), full, pearson(edge, full),
                       host_class == int(out["edge_class"][i]))


def _rebuild(args: Mapping[str, Any]) -> FrameScorer:
    return FrameScorer(**args)


class _Scores:
    """The scoring columns of one batch, filled row by row."""

    def __init__(self, n: int, cams: List[np.ndarray]) -> None:
        self.host_class = np.full(n, -1, dtype=np.int64)
        self.host_probability = np.full(n, np.nan, dtype=np.float64)
        self.pearson = np.full(n, np.nan, dtype=np.float64)
        self.top1_agree = np.zeros(n, dtype=bool)
        self.status = np.full(n, "ok", dtype=object)
        self.full_cam = [np.zeros_like(c) for c in cams]

    def set_status(self, rows: List[int], status: str) -> None:
        for i in rows:
            self.status[i] = status

    def set(self, i: int, host_class: int, probability: float, full: np.ndarray, pearson: float,
            agree: bool) -> None:
        self.host_class[i], self.host_probability[i] = host_class, probability
        self.full_cam[i], self.pearson[i], self.top1_agree[i] = full.astype(np.float32), pearson, agree

    def columns(self) -> Dict[str, np.ndarray]:
        shapes = {c.shape for c in self.full_cam}
        if len(shapes) == 1:
            full = np.stack(self.full_cam) if self.full_cam else np.zeros((0, 0, 0), np.float32)
        else:  # maps of several models in one batch: one object per row
            full = np.empty(len(self.full_cam), dtype=object)
            full[:] = self.full_cam
        return {"host_class": self.host_class, "host_probability": self.host_probability, "full_cam": full,
                "pearson": self.pearson, "top1_agree": self.top1_agree, "status": self.status.astype(str)}
