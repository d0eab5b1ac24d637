"""Model files: read once, metadata checked against the model, hostile metadata refused cleanly.

Hostile metadata is embedded into the committed tiny model (tests/data/tiny_fog.tflite) and
into a tiny ONNX model built here with onnx.helper (no TensorFlow). Every case must end in an
EdgecamError (one CLI error line), never another exception.
"""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_host import ExplainableModel, open_model
from firmware_host.errors import EdgecamError, MetadataError, ModelFileError
from firmware_host.formats import onnx as onnx_format
from firmware_host.formats import read_metadata
from firmware_host.formats import tflite as tflite_format
from toolkit.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
MODEL = (DATA / "tiny_fog.tflite").read_bytes()
GOOD_META = tflite_format.read_metadata(MODEL)
GOOD_FIELDS = json.loads(tflite_format.read_buffers(MODEL)["edgecam"])["edgecam"]
WEIGHTS = tflite_format.read_buffers(MODEL)["edgecam.weights"]
SOME = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])


def _payload(fields) -> bytes:
    """The ``edgecam`` entry for ``fields`` with a *valid* checksum (an attacker recomputes it)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return json.dumps({"edgecam": fields, "sha256": hashlib.sha256(canonical).hexdigest()}).encode()


def _tflite_with(entry: bytes, weights: bytes = WEIGHTS) -> bytes:
    return tflite_format.embed_buffers(MODEL, {"edgecam": entry, "edgecam.weights": weights})


def _one_error_line(result, pattern=None):
    import re

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    if pattern:
        assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


# -- the four named JSON cases, through every device command -------------------------------------
def _hostile_texts():
    good = _payload(GOOD_FIELDS).decode()
    head = good[: good.index('"classes"')]  # inside the "edgecam" object
    return {
        "non-utf8": (good.replace('"dense-fog"', '"dense-\xff"').encode("latin-1", errors="replace"), "not UTF-8"),
        "1e400": (good.replace('"edgecam": {', '"edgecam": {"x": 1e400, ', 1).encode(), "not finite"),
        "deep": ((head + '"x": ' + "[" * 200_000 + "]" * 200_000 + ", " + good[len(head):]).encode(),
                 "nests 200002 levels deep"),
        "4000 digits": (good.replace('"edgecam": {', '"edgecam": {"x": ' + "7" * 4000 + ", ", 1).encode(),
                        "4000 digits"),
    }


HOSTILE = _hostile_texts()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_json_gives_one_error_line_everywhere(tmp_path, case):
    text, pattern = HOSTILE[case]
    path = tmp_path / "hostile.tflite"
    path.write_bytes(_tflite_with(text))
    with pytest.raises(MetadataError, match=pattern):
        ExplainableModel(path)
    runner = CliRunner()
    image = DATA / "tiny_fog_input.png"
    for args in (["inspect", path], ["inspect", "--json", path], ["predict", path, image],
                 ["run", path, "--source", str(DATA / "tiny_fog_input.png"), "--max-frames", "1"]):
        _one_error_line(runner.invoke(cli, [str(a) for a in args]), pattern)


# -- hypothesis: wrongly typed, non-finite, deep and huge values with a valid checksum ------------
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**25, max_value=10**60)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6) | st.text(min_size=5000, max_size=5000))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                           max_leaves=8)


@st.composite
def deep(draw):
    depth = draw(st.integers(30, 80))
    value = draw(scalars)
    for _ in range(depth):
        value = [value] if draw(st.booleans()) else {"k": value}
    return value


hostile_values = (json_values | deep() | st.integers(5000, 200_000).map(lambda n: [0] * n)
                  | st.just(["c"] * 100_001))
FIELDS = ["classes", "preprocessing", "target_layer", "feature_map_shape", "cam_mode", "cam_method", "cam_output",
          "activation", "inputs", "outputs", "quantization", "class_weights", "source", "converter", "self_check",
          "format_version", "precision"]


def _set(fields, path, value):
    """``fields`` with ``value`` at ``path`` (unchanged when an earlier change removed the path)."""
    changed = json.loads(json.dumps(fields))
    try:
        node = changed
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        return fields
    return changed


PATHS = st.sampled_from([(f,) for f in FIELDS] + [("preprocessing", k) for k in
                                                   ("height", "width", "color", "scale", "offset", "interpolation")]
                        + [("class_weights", k) for k in ("shape", "dtype", "buffer", "sha256")]
                        + [("classes", 0), ("feature_map_shape", 0), ("preprocessing", "scale", 0)])


@SOME
@given(st.lists(st.tuples(PATHS, hostile_values), min_size=1, max_size=3))
def test_hostile_fields_only_raise_edgecam_errors(tmp_path_factory, changes):
    fields = GOOD_FIELDS
    for path, value in changes:
        fields = _set(fields, path, value)
    blob = _tflite_with(_payload(fields))
    try:
        model = ExplainableModel(blob)
    except EdgecamError as exc:
        assert "\n" not in str(exc)
    else:  # accepted: then it is a model that works
        model.explain(np.zeros((32, 32, 3), np.uint8))
    path = tmp_path_factory.mktemp("m") / "m.tflite"
    path.write_bytes(blob)
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code in (0, 1) and (result.exit_code == 0 or isinstance(result.exception, SystemExit)), \
        repr(result.exception)


# -- metadata that disagrees with the model ---------------------------------------------------------
def test_claimed_input_size_is_checked_against_the_model():
    big = dataclasses.replace(GOOD_META, preprocessing=dataclasses.replace(GOOD_META.preprocessing, height=3000,
                                                                           width=3000))
    with pytest.raises(MetadataError, match=r"preprocessing says 3000x3000x3 \(rgb\), the model's input 'image' is "
                                            r"\[-1, 32, 32, 3\]"):
        ExplainableModel(tflite_format.embed_metadata(MODEL, big))


@SOME
@given(st.data())
def test_any_disagreement_is_refused(data):
    """Types right, values drawn around the truth: accepted only when they match the model."""
    pre, (h, w, c), k = GOOD_META.preprocessing, GOOD_META.feature_map_shape, GOOD_META.num_classes
    near = lambda v: data.draw(st.sampled_from([v, v, 1, v + 1, 3000]))  # noqa: E731
    height, width, fh, fw, fc, classes = near(pre.height), near(pre.width), near(h), near(w), near(c), near(k)
    color = data.draw(st.sampled_from(["rgb", "rgb", "gray"]))
    cam_output = data.draw(st.sampled_from(["all", "all", "predicted", "selected"]))
    outputs = dict(GOOD_META.outputs)
    if data.draw(st.booleans()):
        role = data.draw(st.sampled_from(sorted(outputs)))
        outputs[role] = data.draw(st.sampled_from(sorted(set(outputs.values())) + ["nope"]))
    weights = np.zeros((fc, classes), np.float32)
    meta = dataclasses.replace(
        GOOD_META, classes=tuple(f"c{i}" for i in range(classes)), feature_map_shape=(fh, fw, fc), cam_output=cam_output,
        preprocessing=dataclasses.replace(pre, height=height, width=width, color=color), outputs=outputs,
        class_weights=weights)
    truth = (height, width, fh, fw, fc, classes, color, cam_output, outputs) == (
        pre.height, pre.width, h, w, c, k, "rgb", "all", dict(GOOD_META.outputs))
    try:
        ExplainableModel(tflite_format.embed_metadata(MODEL, meta))
    except MetadataError as exc:
        assert not truth and "does not match the model" in str(exc)
    else:
        assert truth


# -- metadata reader memory (item 3) -----------------------------------------------------------------
def _many_entries(count: int, blob_size: int = 384 << 10, shared: bool = True) -> bytes:
    """A hand-made .tflite: ``count`` metadata entries naming one large buffer (or one small each)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(MODEL), 0))
    rng = np.random.default_rng(0)
    for i in range(count):
        if i == 0 or not shared:
            buf = schema.BufferT()
            buf.data = rng.integers(0, 256, blob_size if shared else 16, dtype=np.uint8)
            model.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name = f"other{i}"
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _inspect_peak_mb(path: Path):
    wrapper = (
        "import resource, subprocess, sys; "
        "p = subprocess.run([sys.executable, '-m', 'toolkit', 'inspect', sys.argv[1]], capture_output=True, text=True); "
        "sys.stderr.write(p.stderr); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", wrapper, str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    kb, code = out.stdout.split()
    return int(kb) / 1024, int(code), out.stderr


def test_metadata_entries_cost_bounded_memory(tmp_path):
    """Entries sharing one 384 KB buffer (LiteRT would copy it per entry: ~800 MB for 1000) are
    refused before any interpreter sees them; other producers' entries are only named; the
    number of entries is capped. Peak RSS of ``inspect`` stays within 40 MB of the plain model."""
    files = {"shared": _many_entries(1000), "distinct": _many_entries(1000, shared=False),
             "too_many": _many_entries(tflite_format.MAX_METADATA_ENTRIES + 1, shared=False)}  # + the model's 4
    for name, blob in files.items():
        assert len(blob) < 500_000
        (tmp_path / f"{name}.tflite").write_bytes(blob)
    assert tflite_format.read_buffers(files["distinct"])["other999"] == b""  # listed by name, not copied
    with pytest.raises(ModelFileError, match=r"metadata entries name more bytes of buffers .* entries share buffers"):
        read_metadata(tmp_path / "shared.tflite")
    with pytest.raises(ModelFileError, match=r"has 1,029 metadata entries; edgecam reads models with at most 1024"):
        read_metadata(tmp_path / "too_many.tflite")
    base, code, _ = _inspect_peak_mb(DATA / "tiny_fog.tflite")
    assert code == 0
    for name, expected_code in (("shared", 1), ("distinct", 0), ("too_many", 1)):
        peak, code, stderr = _inspect_peak_mb(tmp_path / f"{name}.tflite")
        assert code == expected_code and "Traceback" not in stderr, stderr
        assert peak - base < 40, (name, peak, base)


# -- truncated files (item 10) -----------------------------------------------------------------------
@SOME
@given(st.integers(8, len(MODEL) - 1) | st.integers(len(MODEL) - 2500, len(MODEL) - 1))
def test_truncated_tflite_says_truncated_even_with_json(tmp_path_factory, cut):
    path = tmp_path_factory.mktemp("cut") / "cut.tflite"
    path.write_bytes(MODEL[:cut])
    line = _one_error_line(CliRunner().invoke(cli, ["inspect", "--json", str(path)]))
    assert "truncated" in line and str(path) in line


def test_truncated_buffers_and_tables_are_named():
    # Cut into the buffers: the metadata reader measures every table and buffer against the file.
    for cut in (4000, 8000, 10000):
        with pytest.raises(ModelFileError, match=r"the model buffer .*truncated"):
            read_metadata(MODEL[:cut])
    # Cut into the tables after them: LiteRT's verifier refuses it, and the message says so.
    with pytest.raises(ModelFileError, match=r"LiteRT cannot load the model buffer \(11,224 bytes\).*truncated"):
        open_model(MODEL[:-8])


# -- ONNX: one session, props read from the protobuf -------------------------------------------------
def _tiny_onnx(meta_fields=None) -> bytes:
    """An edgecam-contract ONNX model built with onnx.helper: 4×4×3 input = feature maps, GAP, dense, CAMs."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from firmware_host.metadata import EdgecamMetadata, Preprocessing

    w = np.array([[1, -1], [0.5, 0.25], [-0.5, 1]], np.float32)
    nodes = [
        helper.make_node("Identity", ["image"], ["feature_maps"]),
        helper.make_node("ReduceMean", ["feature_maps"], ["gap"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["gap", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("MatMul", ["feature_maps", "w"], ["cams"]),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", f, ["n", 4, 4, 3])],
        [helper.make_tensor_value_info("probabilities", f, ["n", 2]), helper.make_tensor_value_info("logits", f, ["n", 2]),
         helper.make_tensor_value_info("feature_maps", f, ["n", 4, 4, 3]),
         helper.make_tensor_value_info("cams", f, ["n", 4, 4, 2])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = EdgecamMetadata(classes=("a", "b"), preprocessing=Preprocessing(4, 4), target_layer="fm",
                           feature_map_shape=(4, 4, 3), cam_mode="linear", cam_output="all",
                           outputs={r: r for r in ("probabilities", "logits", "feature_maps", "cams")},
                           class_weights=w)
    return onnx_format.embed_metadata(model.SerializeToString(), meta)


def _raw_prop(key: bytes, value: bytes) -> bytes:
    """A metadata_props entry (field 14) as raw protobuf bytes: appending it adds the entry."""
    def varint(n):
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)
    entry = b"\x0a" + varint(len(key)) + key + b"\x12" + varint(len(value)) + value
    return b"\x72" + varint(len(entry)) + entry


def test_onnx_opens_one_session_and_reads_props_from_the_bytes(tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "tiny.onnx"
    path.write_bytes(_tiny_onnx())
    sessions = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: sessions.append(a) or real(*a, **k))
    model = ExplainableModel(path)
    assert len(sessions) == 1
    exp = model.explain(np.full((4, 4, 3), 200, np.uint8))
    assert exp.cam.shape == (4, 4) and model.classes == ("a", "b")
    assert read_metadata(path).classes == ("a", "b") and len(sessions) == 1  # the reader opens no session


def test_onnx_hostile_props(tmp_path):
    pytest.importorskip("onnxruntime")
    content = _tiny_onnx()
    cases = {
        "key.onnx": (content + _raw_prop(b"\xff\xfe", b"x"), r"metadata_props key is not UTF-8"),
        "value.onnx": (content.replace(b'"a"', b'"\xff"'), r"not UTF-8 text"),
        "twice.onnx": (content + _raw_prop(b"edgecam", b"{}"), r"has two 'edgecam' metadata_props entries"),
        "cut.onnx": (content[:-5], r"truncated"),
    }
    for name, (blob, pattern) in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(EdgecamError, match=pattern):
            read_metadata(path)
        _one_error_line(CliRunner().invoke(cli, ["inspect", "--json", str(path)]))


def test_open_model_reads_the_file_once(monkeypatch):
    import firmware_host.formats as formats

    opened = []
    real = formats.open_regular
    monkeypatch.setattr(formats, "open_regular", lambda p: opened.append(p) or real(p))
    backend, meta = open_model(DATA / "tiny_fog.tflite")
    assert len(opened) == 1 and meta.classes == GOOD_META.classes
    assert set(backend.outputs) >= set(meta.outputs.values())


def test_model_path_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.tflite"
    os.mkfifo(fifo)
    with pytest.raises(ModelFileError, match=r"model\.tflite' is a FIFO, not a model file"):
        ExplainableModel(fifo)
    _one_error_line(CliRunner().invoke(cli, ["inspect", str(fifo)]), "is a FIFO")
