"""toolkit.validate's extension points and hostile inputs: ``ValidationOptions``, ``EdgeSource``,
frame paths of a device log that lead out of its folder, spreadsheet formulas in per_image.csv.

The models are the numpy stand-ins of tests/test_validate.py (known maps, no TensorFlow).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_host.errors import InputError
from toolkit import validate as V

from .test_validate import CLASSES, GRID, _image, _rows, fakes  # noqa: F401 - fakes is a fixture


def _png(path: Path, rng) -> np.ndarray:
    import cv2

    img = _image(rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img[..., ::-1])
    return img


# -- options -----------------------------------------------------------------------------------
def test_options_object_and_keywords_are_one_thing(fakes, tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        _png(tmp_path / "img" / f"{i}.png", rng)
    by_kw = V.validate("k", "e", tmp_path / "img", tmp_path / "a", min_top1=0.5, faithfulness=False,
                       progress=False, cases=1)
    opts = V.ValidationOptions(min_top1=0.5, faithfulness=False, progress=False, cases=1)
    by_obj = V.validate("k", "e", tmp_path / "img", tmp_path / "b", opts)
    mixed = V.validate("k", "e", tmp_path / "img", tmp_path / "c", opts, min_top1=0.9)
    assert by_kw.summary["thresholds"] == by_obj.summary["thresholds"] == {"min_pearson": None, "min_top1": 0.5}
    assert mixed.summary["thresholds"]["min_top1"] == 0.9 and opts.min_top1 == 0.5  # not mutated
    with pytest.raises(TypeError, match="unexpected keyword argument.*min_pearsn"):
        V.validate("k", "e", tmp_path / "img", tmp_path / "d", min_pearsn=0.9)
    with pytest.raises(TypeError, match="options must be a ValidationOptions"):
        V.validate("k", "e", tmp_path / "img", tmp_path / "d", "gradcam")


@pytest.mark.parametrize("kwargs, pattern", [
    ({"min_top1": 95}, r"min_top1 is a fraction in \[0, 1\]. Got 95"),
    ({"min_pearson": -2}, r"min_pearson must be in \[-1, 1\]"),
    ({"batch_size": 0}, r"batch_size and faithfulness_steps must be >= 1"),
    ({"method": "nope"}, r"Unknown method 'nope'. Choose one of: .*gradcam"),
])
def test_invalid_options_cannot_be_built(kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        V.ValidationOptions(**kwargs)


def test_a_new_source_is_one_class(fakes, tmp_path):
    """Adding a validation source = one EdgeSource subclass; the run, metrics and outputs are shared."""
    rng = np.random.default_rng(3)
    images = [_image(rng) for _ in range(5)]

    class MemorySource(V.EdgeSource):
        mode = "memory"
        location = Path("memory")
        total = len(images)

        def items(self, read):
            return (V.SourceItem(f"img{i}", img) for i, img in enumerate(images))

        def edge_maps(self, edge, items, keras_classes):
            return V.ImageFolderSource.edge_maps(self, edge, items, keras_classes)

    result = V.validate_source("k", "e", MemorySource(), tmp_path / "o", faithfulness=False, progress=False)
    assert result.summary["mode"] == "memory" and result.summary["images"] == 5
    assert result.summary["pearson"]["min"] == pytest.approx(1.0)
    assert [r["image"] for r in _rows(result.per_image_path)] == [f"img{i}" for i in range(5)]


# -- frame paths from a device log -------------------------------------------------------------
_PARTS = st.sampled_from(["..", ".", "frames", "secret.png", "", "x", "..\\..", "C:", "~", "%2e%2e", "out"])
_HOSTILE = st.one_of(
    st.lists(_PARTS, min_size=1, max_size=8).map("/".join),
    st.lists(_PARTS, min_size=1, max_size=8).map(lambda p: "/" + "/".join(p)),
    st.lists(_PARTS, min_size=1, max_size=6).map(lambda p: "frames/" + "/".join(p)),
    st.integers(1, 12).map(lambda n: "../" * n + "secret.png"),
    st.integers(0, 6).map(lambda n: "frames/" + "../" * n + "secret.png"),
    st.text(max_size=40),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=st.lists(_HOSTILE, min_size=1, max_size=6))
def test_log_frames_never_leave_the_log_folder(tmp_path, paths):
    """Whatever a record's frame_path says, the reader only hands out files under the log's folder."""
    base = tmp_path / "run"
    (base / "frames").mkdir(parents=True, exist_ok=True)
    if not (base / "frames" / "out").is_symlink():  # a symlink inside that points out
        (base / "frames" / "out").symlink_to(tmp_path)
    good = {"frame": 0, "cam": [[1.0, 0.5]], "probabilities": [0.2, 0.8], "class_index": 1}
    log = base / "run.jsonl"
    log.write_text("".join(json.dumps({**good, "frame": i, "frame_path": p}) + "\n" for i, p in enumerate(paths)))
    reader = V.RunLogReader(log)
    frames = list(reader)
    root = base.resolve()
    for frame in frames:
        real = Path(os.path.realpath(frame.frame_path))
        assert real.is_relative_to(root) and frame.frame_path.is_relative_to(base), frame.frame_path
    assert len(frames) + sum(reader.skipped.values()) == len(paths)


def test_log_records_pointing_outside_are_bad_records(fakes, tmp_path):
    """A log naming /etc/…, ../secret.png or a symlink out cannot put that image in the report."""
    rng = np.random.default_rng(5)
    run = tmp_path / "device" / "run"
    secret = tmp_path / "secret.png"
    _png(secret, rng)
    host = fakes["host"]
    (run / "frames").mkdir(parents=True)
    (run / "frames" / "link.png").symlink_to(secret)
    hostile = [str(secret), "../../secret.png", "frames/../../../secret.png", "frames/link.png",
               "frames/../..", "/etc/passwd", "//host/share/a.png"]
    lines = []
    for i in range(3 + len(hostile)):
        from firmware_host.preprocess import preprocess

        if i < 3:
            img, rel = _png(run / "frames" / f"{i}.png", rng), f"frames/{i}.png"
        else:
            img, rel = None, hostile[i - 3]
        x = preprocess(img if img is not None else _image(rng), fakes["edge"].meta.preprocessing)[None]
        probs = host.probs(x)[0]
        c = int(probs.argmax())
        lines.append(json.dumps({"frame": i, "class_index": c, "probabilities": probs.tolist(),
                                 "cam": host.cams(x, [c])[0].tolist(), "frame_path": rel}))
    (run / "run.jsonl").write_text("\n".join(lines) + "\n")
    result = V.validate_log("k", "e", run / "run.jsonl", tmp_path / "out", faithfulness=False, progress=False,
                            cases=8)
    s = result.summary
    assert s["images"] == 3 and s["skipped"]["invalid"] == len(hostile) and s["skipped"]["unreadable"] == 0
    assert [r["image"] for r in _rows(result.per_image_path)] == ["frames/0.png", "frames/1.png", "frames/2.png"]
    assert "secret" not in result.report_path.read_text()


# -- per_image.csv and spreadsheets ------------------------------------------------------------
@given(st.one_of(st.text(max_size=30), st.floats(allow_nan=True), st.integers(-10**6, 10**6)))
def test_csv_cells_are_inert_and_numbers_stay_numbers(value):
    cell = V.csv_cell(value)
    if isinstance(value, str):
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
        assert cell in (value, "'" + value)
    elif isinstance(value, float):
        assert float(cell) == value or (np.isnan(value) and cell == "nan")
    else:
        assert cell == value


def test_formula_names_are_prefixed_in_per_image_csv(fakes, tmp_path):
    rng = np.random.default_rng(2)
    names = ["=HYPERLINK(1).png", "+1.png", "-2.png", "@SUM(A1).png", "plain.png"]
    for name in names:
        _png(tmp_path / "img" / name, rng)
    fakes["edge"].damage = lambda maps: maps.max(axis=(1, 2), keepdims=True) - maps  # negative Pearson
    result = V.validate("k", "e", tmp_path / "img", tmp_path / "o", faithfulness=False, progress=False)
    rows = _rows(result.per_image_path)
    assert sorted(r["image"] for r in rows) == sorted(
        ["'=HYPERLINK(1).png", "'+1.png", "'-2.png", "'@SUM(A1).png", "plain.png"])
    pearsons = [float(r["pearson"]) for r in rows]  # numbers are still plain numbers
    assert min(pearsons) < 0 and all(r["pearson"].startswith("-") for r in rows if float(r["pearson"]) < 0)
    assert {r["keras_label"] for r in rows} <= set(CLASSES) and GRID == 4
