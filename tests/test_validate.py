"""toolkit.validate: streaming, metrics plumbing, outputs, the gate, the device-log reader.

The first part runs the validator on a hand-made "model" (block-mean feature maps and a linear
head, in numpy) standing in for both the edge model and the Keras side, so the numbers are
known; the second part converts a tiny real Keras model and runs the CLI end to end.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from firmware_host import cam
from firmware_host.errors import InputError, MetadataError, SourceError
from firmware_host.metadata import EdgecamMetadata, Preprocessing
from firmware_host.model import Explanation
from firmware_host.preprocess import preprocess
from toolkit import validate as V

stats = pytest.importorskip("scipy.stats", reason="scipy (a dev dependency) is the reference")

SIZE = 32
GRID = 4
CLASSES = ("left", "right", "none")


def _meta():
    return EdgecamMetadata(
        classes=CLASSES, preprocessing=Preprocessing(SIZE, SIZE), target_layer="block_conv",
        feature_map_shape=(GRID, GRID, 3), cam_mode="linear", cam_output="all",
    )


class BlockModel:
    """A linear-head CNN in numpy: A = 8×8 block means of the input, logits = GAP(A) @ W."""

    weights = np.array([[4.0, -2.0, 0.1], [-1.0, 3.0, 0.1], [0.5, 0.5, 0.1]], np.float32)

    def __init__(self, meta):
        self.meta = meta

    def fmaps(self, x):
        n = len(x)
        b = SIZE // GRID
        return x.reshape(n, GRID, b, GRID, b, 3).mean(axis=(2, 4))

    def probs(self, x):
        logits = self.fmaps(x).mean(axis=(1, 2)) @ self.weights
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def cams(self, x, classes):
        f = self.fmaps(x)
        return np.stack([cam.relu(cam.combine(f[i], self.weights[:, c])) for i, c in enumerate(classes)])


class FakeHost(BlockModel):
    """The 'Keras' side of the validator (same interface as toolkit.validate._HostModel)."""

    name = "block-model"
    method = "gradcam"
    layer = "block_conv"

    def predict(self, x):
        return self.probs(x)

    def explain(self, x, classes, batch_size):
        probs = self.probs(x)
        classes = probs.argmax(axis=1) if classes is None else np.asarray(classes)
        return probs, classes, self.cams(x, classes)


class FakeEdge(BlockModel):
    """The edge side (same interface as ExplainableModel); ``damage`` moves its maps."""

    path = "block.tflite"

    def __init__(self, meta, damage=None):
        super().__init__(meta)
        self.metadata = meta
        self.input_size = (SIZE, SIZE)
        self.damage = damage
        self.batches = []

    own_class_only = False  # like a 'predicted'-output model without class weights

    def explain_batch(self, images, class_index=None):
        self.batches.append(len(images))
        x = np.stack([preprocess(img, self.meta.preprocessing) for img in images])
        p = self.probs(x)
        if self.own_class_only:
            p = np.roll(p, 1, axis=1)  # and a different top-1 than the Keras model
            if class_index is not None and np.any(np.asarray(class_index) != p.argmax(axis=1)):
                raise MetadataError("only the predicted class can be explained")
        pred = p.argmax(axis=1)
        chosen = pred if class_index is None else np.asarray(class_index)
        maps = self.cams(x, chosen)
        if self.damage is not None:
            maps = self.damage(maps)
        return [
            Explanation(probabilities=p[i], class_index=int(chosen[i]), predicted_index=int(pred[i]),
                        label=CLASSES[int(chosen[i])], cam=maps[i])
            for i in range(len(images))
        ]


def _image(rng):
    img = rng.integers(0, 60, (SIZE + 8, SIZE + 4, 3), dtype=np.uint8)
    r, c = rng.integers(0, SIZE - 10, 2)
    img[r : r + 10, c : c + 10, rng.integers(0, 3)] = 250
    return img


@pytest.fixture
def image_dir(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for i in range(7):
        folder = root / "sub" if i % 3 == 0 else root
        cv2.imwrite(str(folder / f"img{i}.png"), _image(rng)[..., ::-1])
    (root / "notes.txt").write_text("not an image")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / ".hidden.png").write_bytes(b"")
    return root


@pytest.fixture
def fakes(monkeypatch):
    meta = _meta()
    made = {"edge": FakeEdge(meta), "host": FakeHost(meta)}
    monkeypatch.setattr(V, "_open", lambda *a, **k: (made["edge"], made["host"]))
    return made


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- folder mode -------------------------------------------------------------------------------
def test_identical_maps_pass_and_outputs_are_complete(fakes, image_dir, tmp_path):
    out = tmp_path / "out"
    result = V.validate("k.keras", "e.tflite", image_dir, out, min_pearson=0.99, min_top1=0.99,
                        batch_size=3, faithfulness_steps=4, progress=False)
    s = json.loads((out / "summary.json").read_text())
    assert result.passed and s["verdict"] == "PASS" and s == dict(result.summary)
    assert s["images"] == 7 and s["skipped"] == {"unreadable": 2}
    assert s["top1_agreement"] == 1.0
    for key in ("pearson", "spearman", "ssim", "iou_top20"):
        assert s[key]["median"] == pytest.approx(1.0) and s[key]["min"] == pytest.approx(1.0)
        assert s["input_resolution"][key]["p05"] == pytest.approx(1.0)
    assert s["prob_max_abs_diff"]["max"] == 0.0
    assert s["peak_distance"]["max"] == 0.0
    f = s["faithfulness"]
    assert f["edge"]["deletion_auc"]["median"] == pytest.approx(f["full"]["deletion_auc"]["median"])
    assert [c["name"] for c in s["checks"]] == ["pearson.median", "top1_agreement"]
    rows = _rows(out / "per_image.csv")
    assert [r["image"] for r in rows] == ["img1.png", "img2.png", "img4.png", "img5.png", "sub/img0.png", "sub/img3.png", "sub/img6.png"]
    assert list(rows[0]) == list(V.CSV_COLUMNS)
    assert (out / "report.html").stat().st_size > 10_000
    # Streaming: the edge model never saw more than one batch at a time.
    assert max(fakes["edge"].batches) == 3 and sum(fakes["edge"].batches) == 7


def test_damaged_edge_maps_fail_the_gate_and_match_an_independent_pearson(fakes, image_dir, tmp_path):
    fakes["edge"].damage = lambda maps: np.roll(maps, 1, axis=2) + 0.05
    out = tmp_path / "out"
    result = V.validate("k.keras", "e.tflite", image_dir, out, min_pearson=0.95, batch_size=4,
                        faithfulness=False, progress=False)
    assert not result.passed and result.summary["verdict"] == "FAIL"
    assert result.summary["checks"][0]["passed"] is False
    assert result.summary["faithfulness"] is None
    # Independent recomputation of every image's feature-map Pearson from the model itself.
    import cv2

    host, meta = fakes["host"], _meta()
    rows = _rows(out / "per_image.csv")
    want = []
    for row in rows:
        img = cv2.imread(str(image_dir / row["image"]))[..., ::-1]
        x = preprocess(np.ascontiguousarray(img), meta.preprocessing)[None]
        c = [int(row["keras_class"])]
        full, edge = host.cams(x, c)[0], np.roll(host.cams(x, c), 1, axis=2)[0] + 0.05
        want.append(stats.pearsonr(full.ravel(), cam.relu(edge).ravel()).statistic)
        assert float(row["pearson"]) == pytest.approx(want[-1], abs=1e-6)
    assert result.summary["pearson"]["median"] == pytest.approx(np.median(want), abs=1e-6)
    assert "FAIL" in result.describe() and "pearson.median" in result.describe()


def test_faithfulness_is_scored_on_an_evenly_spread_sample(fakes, image_dir, tmp_path):
    out = tmp_path / "o"
    # 9 files (7 images), at most 3 scored: images k·9 // 3 = 0, 3, 6.
    result = V.validate("k.keras", "e.tflite", image_dir, out, faithfulness_steps=2,
                        faithfulness_images=3, batch_size=2, progress=False)
    rows = _rows(out / "per_image.csv")
    scored = [int(r["index"]) for r in rows if r["deletion_auc_edge"] != ""]
    assert scored == [0, 3, 6]
    assert result.summary["faithfulness"]["images"] == 3
    assert result.summary["faithfulness"]["edge"]["insertion_auc"]["n"] == 3


def test_edge_that_explains_only_its_own_class_is_compared_on_that_class(fakes, image_dir, tmp_path):
    fakes["edge"].own_class_only = True
    result = V.validate("k.keras", "e.tflite", image_dir, tmp_path / "o", min_top1=0.5,
                        faithfulness=False, progress=False)
    s = result.summary
    rows = _rows(tmp_path / "o" / "per_image.csv")
    assert all(r["cam_class"] == r["edge_class"] != r["keras_class"] for r in rows)
    # The full maps were recomputed for the edge's class, so the maps still agree exactly...
    assert s["pearson"]["min"] == pytest.approx(1.0)
    # ...while the disagreement shows in top-1, the gate and a warning.
    assert s["top1_agreement"] == 0.0 and not result.passed
    assert any("could not explain the Keras class" in w for w in s["warnings"])


def test_no_thresholds_means_no_gate(fakes, image_dir, tmp_path):
    result = V.validate("k.keras", "e.tflite", image_dir, tmp_path / "o", faithfulness=False, progress=False)
    assert result.passed and result.verdict == "NO GATE" and result.summary["checks"] == []


def test_folder_without_images_is_an_error(fakes, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    with pytest.raises(InputError, match=r"No usable image in .*empty \(skipped: 1 unreadable\)"):
        V.validate("k.keras", "e.tflite", empty, tmp_path / "o", progress=False)
    with pytest.raises(SourceError, match="is not a directory"):
        V.validate("k.keras", "e.tflite", tmp_path / "nope", tmp_path / "o", progress=False)


def test_bad_thresholds_are_rejected(tmp_path):
    with pytest.raises(InputError, match=r"min_top1 is a fraction in \[0, 1\]. Got 95"):
        V.validate("k.keras", "e.tflite", tmp_path, tmp_path / "o", min_top1=95)


# -- device log mode ---------------------------------------------------------------------------
def _write_log(tmp_path, fakes):
    import cv2

    rng = np.random.default_rng(5)
    run = tmp_path / "run"
    (run / "frames").mkdir(parents=True)
    host, meta = fakes["host"], _meta()
    lines = []
    for i in range(6):
        img = _image(rng)
        x = preprocess(img, meta.preprocessing)[None]
        probs = host.probs(x)[0]
        c = int(probs.argmax())
        rec = {"frame": i, "timestamp": 1700000000.0 + i, "class_index": c, "predicted_index": c,
               "probabilities": probs.tolist(), "cam": host.cams(x, [c])[0].tolist(), "peak": [0, 0],
               "extra_field": "ignored"}
        if i % 2 == 0:  # every 2nd frame saved
            cv2.imwrite(str(run / "frames" / f"{i:06d}.png"), img[..., ::-1])
            rec["frame_path"] = f"frames/{i:06d}.png"
        lines.append(json.dumps(rec))
    bad_shape = dict(json.loads(lines[0]), cam=[[0.0, 1.0]], frame=90)
    missing = dict(json.loads(lines[0]), frame_path="frames/gone.png", frame=91)
    failed = json.loads(lines[0])  # a failing model: non-finite values are logged as null
    failed.update(frame=92, probabilities=[None] * len(CLASSES))
    lines += [json.dumps(bad_shape), json.dumps(missing), json.dumps(failed), "[1, 2]", '{"frame": 7, "cam": [[0']
    (run / "run.jsonl").write_text("\n".join(lines) + "\n\n")
    return run / "run.jsonl"


def test_log_reader_is_tolerant(fakes, tmp_path):
    log = _write_log(tmp_path, fakes)
    reader = V.RunLogReader(log, (GRID, GRID), len(CLASSES))
    assert reader.count_saved_frames() == 6  # 3 saved + 3 broken records that name a frame
    frames = list(reader)
    assert [f.frame for f in frames] == [0, 2, 4, 91]
    assert frames[0].cam.shape == (GRID, GRID) and frames[0].frame_path == log.parent / "frames/000000.png"
    assert reader.skipped == {"malformed": 2, "no_frame_path": 3, "invalid": 2}
    with pytest.raises(SourceError, match="does not exist"):
        V.RunLogReader(tmp_path / "none.jsonl")


def test_validate_from_log_compares_recorded_cams(fakes, tmp_path):
    log = _write_log(tmp_path, fakes)
    result = V.validate_log("k.keras", "e.tflite", log, tmp_path / "out", min_pearson=0.99,
                            min_top1=1.0, faithfulness_steps=2, progress=False)
    s = result.summary
    assert s["mode"] == "log" and s["images"] == 3
    assert s["skipped"] == {"unreadable": 1, "malformed": 2, "no_frame_path": 3, "invalid": 2}
    # The recorded maps were exact, and the saved PNG frames are lossless: full agreement.
    assert result.passed and s["pearson"]["min"] == pytest.approx(1.0, abs=1e-6)
    rows = _rows(tmp_path / "out" / "per_image.csv")
    assert [r["frame"] for r in rows] == ["0", "2", "4"]
    assert fakes["edge"].batches == []  # the device's maps were used, not a re-run


# -- end to end with real models (the committed tiny fog model) --------------------------------
DATA = Path(__file__).parent / "data"


def _needs_explainer():
    explain = pytest.importorskip("toolkit.explain", reason="needs the host explainer")
    if not hasattr(explain, "explain_full"):
        pytest.skip("toolkit.explain.explain_full has not landed on main yet")


@pytest.fixture(scope="module")
def fog_models(tmp_path_factory):
    """The committed tiny fog model, its float conversion, and a deliberately wrong conversion."""
    _needs_explainer()
    converters = pytest.importorskip("converters", reason="needs the converter")
    keras_path, good = DATA / "tiny_fog.keras", DATA / "tiny_fog.tflite"
    wrong = tmp_path_factory.mktemp("fog") / "wrong_layer.tflite"
    # Wrong: explained at the first conv layer, whose head (pool + conv) is not linear, so its
    # CAM is the approximate (averaged-gradient) kind.
    rng = np.random.default_rng(1)
    converters.convert(keras_path, wrong, labels=DATA / "tiny_fog_labels.txt", target_layer="conv1",
                       approximate=True, calibration=[_image(rng) for _ in range(8)])
    return keras_path, good, wrong


def test_cli_gate_passes_for_the_right_model_and_fails_for_a_wrong_layer(fog_models, image_dir, tmp_path):
    keras_path, good, wrong = fog_models
    args = ["--images", str(image_dir), "--min-pearson", "0.9", "--min-top1", "0.9", "--quiet", "--steps", "2"]
    ok = _cli([str(keras_path), str(good), "--out", str(tmp_path / "g"), *args])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("PASS")
    s = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert s["images"] == 7 and s["top1_agreement"] == 1.0 and s["pearson"]["min"] > 0.99
    assert s["edge_target_layer"] == s["full_target_layer"] == "last_conv" and s["warnings"] == []
    bad = _cli([str(keras_path), str(wrong), "--out", str(tmp_path / "w"), *args])
    assert bad.exit_code == 1, bad.output
    assert "[FAIL] pearson.median" in bad.output and "'conv1'" in bad.output


def test_summary_matches_an_independent_computation(fog_models, image_dir, tmp_path):
    """Pearson and top-1 recomputed from the runtime and a GradientTape Grad-CAM, to 1e-3."""
    import cv2
    import keras
    import tensorflow as tf

    from firmware_host import ExplainableModel

    keras_path, good, _ = fog_models
    result = V.validate(keras_path, good, image_dir, tmp_path / "o", faithfulness=False, progress=False)
    model = keras.models.load_model(keras_path)
    edge = ExplainableModel(good)
    conv = model.get_layer("last_conv")
    features = keras.Model(model.inputs, [conv.output, model.get_layer("gap").output])
    dense = model.get_layer("fog_level")
    pearsons, agree = [], []
    for path in V.iter_image_files(image_dir):
        img = cv2.imread(str(path))
        if img is None:
            continue
        rgb = np.ascontiguousarray(img[..., ::-1])
        x = preprocess(rgb, edge.metadata.preprocessing)[None]
        probs = model.predict_on_batch(x)[0]
        c = int(np.argmax(probs))
        with tf.GradientTape() as tape:
            a, _ = features([x])
            tape.watch(a)
            logit = tf.matmul(tf.reduce_mean(a, axis=(1, 2)), dense.kernel) + dense.bias
            score = logit[0, c]
        grads = tape.gradient(score, a).numpy()[0]
        full = np.maximum(np.sum(a.numpy()[0] * grads.mean(axis=(0, 1)), axis=-1), 0)
        exp = edge.explain(rgb, class_index=c)
        pearsons.append(stats.pearsonr(full.ravel(), exp.cam.ravel()).statistic)
        agree.append(exp.predicted_index == c)
    s = result.summary
    assert s["images"] == len(pearsons) == 7
    assert s["pearson"]["median"] == pytest.approx(np.median(pearsons), abs=1e-3)
    assert s["pearson"]["min"] == pytest.approx(np.min(pearsons), abs=1e-3)
    assert s["top1_agreement"] == pytest.approx(np.mean(agree), abs=1e-3)


def test_from_log_written_by_the_run_loop(fog_models, tmp_path):
    """A log written by the run loop's own TelemetryLog validates against full Grad-CAM."""
    sinks = pytest.importorskip("firmware_host.sinks", reason="needs `edgecam run` (firmware_host.sinks)")
    if not hasattr(sinks, "TelemetryLog"):
        pytest.skip("firmware_host.sinks.TelemetryLog has not landed on main yet")
    from firmware_host import ExplainableModel

    keras_path, good, _ = fog_models
    edge = ExplainableModel(good)
    log = sinks.TelemetryLog(tmp_path / "run.jsonl", save_frames=2, frame_format="png")
    rng = np.random.default_rng(7)
    for i in range(6):
        rgb = _image(rng)
        log.write(frame=i, timestamp=1.0 + i, explanation=edge.explain(rgb), image_bgr=rgb[..., ::-1].copy())
    log.close()
    result = V.validate_log(keras_path, good, tmp_path / "run.jsonl", tmp_path / "o", min_pearson=0.99,
                            min_top1=1.0, faithfulness=False, progress=False)
    s = result.summary
    assert s["images"] == 3 and s["skipped"]["no_frame_path"] == 3
    # The log keeps 4 significant digits of the CAM: agreement stays near exact.
    assert result.passed and s["pearson"]["min"] > 0.999

# -- the CLI on the stand-in model -------------------------------------------------------------
def _cli(args):
    from click.testing import CliRunner

    from toolkit.cli import cli

    return CliRunner().invoke(cli, ["validate", *args])


@pytest.fixture
def model_files(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"stand-in")
    (tmp_path / "m.tflite").write_bytes(b"stand-in")
    return [str(tmp_path / "m.keras"), str(tmp_path / "m.tflite")]


def test_cli_exit_codes_follow_the_gate(fakes, image_dir, model_files, tmp_path):
    common = [*model_files, "--images", str(image_dir), "--quiet", "--no-faithfulness"]
    ok = _cli([*common, "--out", str(tmp_path / "a"), "--min-pearson", "0.99", "--min-top1", "1"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("PASS: 7 images") and "[ok  ] pearson.median" in ok.output
    fakes["edge"].damage = lambda maps: np.roll(maps, 2, axis=1)
    bad = _cli([*common, "--out", str(tmp_path / "b"), "--min-pearson", "0.99"])
    assert bad.exit_code == 1
    assert bad.output.startswith("FAIL") and "[FAIL] pearson.median" in bad.output


def test_cli_needs_exactly_one_source(model_files, image_dir, tmp_path):
    neither = _cli([*model_files, "--out", str(tmp_path / "o")])
    assert neither.exit_code == 2 and "exactly one of --images DIR or --from-log" in neither.output
    log = tmp_path / "run.jsonl"
    log.write_text("")
    both = _cli([*model_files, "--out", str(tmp_path / "o"), "--images", str(image_dir), "--from-log", str(log)])
    assert both.exit_code == 2


def test_cli_reports_library_errors_in_one_line(fakes, model_files, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _cli([*model_files, "--images", str(empty), "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 1
    assert "Error: No usable image in" in result.output and "Traceback" not in result.output


def test_metrics_and_validate_import_without_scipy_or_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['scipy'] = None; sys.modules['tensorflow'] = None; "
        "import toolkit.metrics, toolkit.validate, toolkit.report, toolkit.cli.validate; "
        "assert 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_read_rgb_decides_by_content_not_suffix(tmp_path):
    import cv2

    img = np.zeros((5, 6, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    cv2.imwrite(str(tmp_path / "a.png"), img[..., ::-1])
    (tmp_path / "no_suffix").write_bytes((tmp_path / "a.png").read_bytes())
    (tmp_path / "fake.jpg").write_text("text")
    np.testing.assert_array_equal(V.read_rgb(tmp_path / "no_suffix"), img)
    assert V.read_rgb(tmp_path / "fake.jpg") is None
    assert V.read_rgb(tmp_path / "missing.png") is None
    assert V.read_rgb(tmp_path) is None
