"""ONNX classifiers exported from PyTorch → explained ONNX (converters.onnx_in), without TensorFlow.

The fixtures under tests/data/onnx_import/ were exported with ``torch.onnx.export`` and their
reference maps computed with pytorch-grad-cam (make_fixtures.py): the converted model must
agree with them (Pearson ≥ 0.999, top-1 100%) for every head kind.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from converters.onnx_in import convert_onnx  # noqa: E402
from firmware_host.backends import PlainModel  # noqa: E402
from firmware_host.compare import pearson  # noqa: E402
from firmware_host.errors import (  # noqa: E402
    ConversionError,
    EdgecamError,
    InputError,
    LayerError,
    ModelFileError,
    UnsupportedHeadError,
)
from firmware_host.model import ExplainableModel  # noqa: E402

DATA = Path(__file__).parent / "data" / "onnx_import"
# fixture → (cam_mode, cam_output) the converter must choose
KINDS = {
    "gap_linear": ("linear", "all"),
    "flatten_linear": ("flatten", "all"),
    "flatten_gradcam": ("flatten", "all"),
    "mlp": ("gradient", "selected"),
    "bn_head": ("linear", "all"),
    "many_classes": ("linear", "predicted"),
    "max_pool_mlp": ("gradient", "selected"),
    "nhwc_input": ("linear", "all"),
    "layernorm_head": ("gradient", "selected"),
    "silu_mlp": ("gradient", "selected"),  # nn.SiLU: Mul(x, Sigmoid(x))
}


def _fixture(name):
    ref = np.load(DATA / f"{name}.npz")
    return DATA / f"{name}.onnx", ref


def _explain_all(model: ExplainableModel, images, class_index=None):
    """Explain each image; one at a time when the model's batch is fixed at 1."""
    if model.backend.inputs["image"].shape[0] == 1:
        idx = [None] * len(images) if class_index is None else list(class_index)
        return [model.explain(img, None if c is None else int(c)) for img, c in zip(images, idx)]
    return model.explain_batch(list(images), class_index=class_index)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_matches_pytorch_grad_cam(name, tmp_path):
    path, ref = _fixture(name)
    method = str(ref["method"])
    result = convert_onnx(path, tmp_path / "x.onnx", cam_method=method, calibration=list(ref["images"]))
    meta = result.metadata
    assert (meta.cam_mode, meta.cam_output) == KINDS[name]
    assert meta.cam_method == method
    assert result.self_check.passed and meta.self_check["passed"]
    model = ExplainableModel(result.path)
    assert model.metadata.self_check == meta.self_check  # stored in the file
    exps = _explain_all(model, ref["images"])
    assert [e.class_index for e in exps] == ref["classes"].tolist()  # top-1 100%
    for exp, cam in zip(exps, ref["cam"]):
        assert exp.cam.shape == cam.shape
        assert pearson(exp.cam, cam) >= 0.999
    logits_prob = np.exp(ref["logits"] - ref["logits"].max(-1, keepdims=True))
    logits_prob /= logits_prob.sum(-1, keepdims=True)
    np.testing.assert_allclose([e.probabilities for e in exps], logits_prob, atol=1e-5)


def test_metadata_and_io_contract(tmp_path):
    path, ref = _fixture("mlp")
    result = convert_onnx(path, tmp_path / "x.onnx", labels=[f"c{i}" for i in range(6)], self_check=False)
    meta = result.metadata
    assert meta.inputs == {"image": "image", "class_index": "class_index"}
    assert set(meta.outputs) == {"probabilities", "logits", "feature_maps", "cam"}
    assert meta.feature_map_shape == (6, 6, 16)
    assert meta.converter["source_layout"] == "NCHW"
    assert meta.classes == tuple(f"c{i}" for i in range(6))
    pre = meta.preprocessing
    # torchvision defaults: x = (pixel/255 - mean)/std
    np.testing.assert_allclose(pre.scale, 1 / (255 * np.array([0.229, 0.224, 0.225])), rtol=1e-6)
    np.testing.assert_allclose(pre.offset, -np.array([0.485, 0.456, 0.406]) / np.array([0.229, 0.224, 0.225]), rtol=1e-6)
    loaded = onnx.load(str(result.path))
    onnx.checker.check_model(loaded)
    assert [i.name for i in loaded.graph.input] == ["image", "class_index"]
    assert [d.dim_value for d in loaded.graph.input[0].type.tensor_type.shape.dim][1:] == [24, 24, 3]


def test_gradient_head_explains_any_class(tmp_path):
    """The class_index input selects the class; the map differs from the predicted one's."""
    from converters.onnx_in.analysis import backward, to_nhwc, Values
    from converters.onnx_in.graph import Tables, find_head

    path, ref = _fixture("mlp")
    model = ExplainableModel(convert_onnx(path, tmp_path / "x.onnx", self_check=False).path)
    other = (ref["classes"] + 1) % 6
    exps = model.explain_batch(list(ref["images"]), class_index=other)
    assert [e.class_index for e in exps] == other.tolist()
    # Reference for those classes: numpy Grad-CAM from the original graph's tensors.
    graph = onnx.load(str(path))
    tables = Tables(graph)
    head = find_head(graph, tables)
    import onnxruntime as ort

    probe = onnx.load(str(path))
    probe.graph.output.extend([onnx.helper.make_tensor_value_info(n, 1, None) for n in head.tensors])
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    x = ((ref["images"] / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(0, 3, 1, 2)
    values = dict(zip(head.tensors, session.run(head.tensors, {"input": x.astype(np.float32)})))
    grads = to_nhwc(backward(head, np.eye(6)[other], Values(tables, values)), "NCHW")
    fmaps = to_nhwc(values[head.target], "NCHW")
    expected = np.maximum(np.einsum("nhwc,nc->nhw", fmaps, grads.mean(axis=(1, 2))), 0)
    for exp, cam in zip(exps, expected):
        assert pearson(exp.cam, cam) >= 0.999 or (np.ptp(cam) < 1e-9 and np.ptp(exp.cam) < 1e-6)


def test_many_classes_other_class_uses_stored_weights(tmp_path):
    path, ref = _fixture("many_classes")
    model = ExplainableModel(convert_onnx(path, tmp_path / "x.onnx", self_check=False).path)
    assert model.metadata.class_weights.shape == (16, 100)
    exp = model.explain(ref["images"][0], class_index=7)
    assert exp.class_index == 7 and exp.cam.shape == (6, 6)


def test_target_tensor_override_and_wrong_name(tmp_path):
    path, ref = _fixture("gap_linear")
    with pytest.raises(LayerError, match="Pass --target-tensor with one of: .*/explained/Relu_output_0"):
        convert_onnx(path, tmp_path / "x.onnx", target_tensor="nope")
    # An earlier tensor: the head then holds a ReLU, so the converter writes the gradient.
    result = convert_onnx(path, tmp_path / "x.onnx", target_tensor="/features/features.2/Conv_output_0")
    assert result.metadata.cam_mode == "gradient"
    assert result.self_check.passed
    # A tensor off the head's path (before a conv) is refused, naming the operator.
    with pytest.raises(UnsupportedHeadError, match="Conv"):
        convert_onnx(path, tmp_path / "x.onnx", target_tensor="/features/features.1/Relu_output_0")


def test_reserved_output_name_and_baseline(tmp_path):
    """A model whose output is already called 'logits' converts; --emit-baseline gives a plain model."""
    path, ref = _fixture("gap_linear")
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.output[:] = ["logits" if o == "output" else o for o in node.output]
    model.graph.output[0].name = "logits"
    src = tmp_path / "named.onnx"
    onnx.save(model, str(src))
    result = convert_onnx(src, tmp_path / "x.onnx", emit_baseline=True, calibration=list(ref["images"]))
    assert result.self_check.passed
    plain = PlainModel(result.baseline_path)
    explained = ExplainableModel(result.path)
    x = explained.preprocess(list(ref["images"]))
    probs = plain.run(x)["probabilities"]
    np.testing.assert_allclose(probs, [e.probabilities for e in explained.explain_batch(list(ref["images"]))], atol=1e-6)


def test_no_tensorflow_needed(tmp_path):
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "import converters\n"
        f"r = converters.convert({str(DATA / 'mlp.onnx')!r}, {str(tmp_path / 'x.onnx')!r})\n"
        "assert r.self_check.passed, r.self_check\n"
        "print(r.metadata.cam_mode)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "gradient"


def _installed_by(requirements, extras=()) -> set:
    """Every distribution ``pip install`` of ``requirements`` pulls in, from the installed metadata."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted, seen = [(Requirement(r), "") for r in requirements], set()
    while wanted:
        req, extra = wanted.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": extra})):
            continue
        seen.add(name)
        try:
            wanted += [(Requirement(r), e) for r in metadata.requires(req.name) or () for e in ("", *req.extras)]
        except metadata.PackageNotFoundError:
            pass
    return seen


def test_onnx_extra_is_the_whole_onnx_path_without_tensorflow(tmp_path):
    """`pip install 'edgecam[onnx]'` converts (float and int8), predicts and validates an ONNX model.

    In a subprocess with tensorflow, keras, tf2onnx and torch blocked, the CLI converts, quantizes,
    predicts and validates; every package it then has loaded must be one that the base install
    plus the [onnx] extra of pyproject.toml installs (matplotlib, from [host], is blocked too: the
    report is then written without charts).
    """
    import cv2
    from packaging.utils import canonicalize_name

    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert {canonicalize_name(r.split(">")[0]) for r in project["optional-dependencies"]["onnx"]} == {"onnx", "onnxruntime"}
    allowed = _installed_by(project["dependencies"] + project["optional-dependencies"]["onnx"]) | {"edgecam"}

    path, ref = _fixture("mlp")
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(ref["images"]):
        cv2.imwrite(str(images / f"{i}.png"), image[..., ::-1])
    commands = [
        ["convert", str(path), "-o", str(tmp_path / "x.onnx")],
        ["convert", str(path), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8", "--calibration", str(images)],
        ["predict", str(tmp_path / "q.onnx"), str(images / "0.png")],
        ["validate", str(path), str(tmp_path / "x.onnx"), "--images", str(images), "--out", str(tmp_path / "v"),
         "--quiet", "--min-pearson", "0.999", "--min-top1", "1.0"],
    ]
    code = (
        "import json, sys\n"
        "startup = set(sys.modules)  # what site.py loaded (e.g. setuptools' .pth hook) is not ours\n"
        "for name in ('tensorflow', 'keras', 'tf2onnx', 'torch', 'matplotlib'):\n"
        "    sys.modules[name] = None\n"
        "from importlib import metadata\n"
        "from toolkit.cli import cli\n"
        f"for args in {commands!r}:\n"
        "    cli.main(args, prog_name='edgecam', standalone_mode=False)\n"
        "names = metadata.packages_distributions()\n"
        "tops = {m.split('.')[0] for m, v in list(sys.modules.items()) if v is not None and m not in startup}\n"
        "print('LOADED', json.dumps(sorted({d for t in tops for d in names.get(t, ())})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert (tmp_path / "q.onnx").is_file() and "predicted class_" in out.stdout
    assert "PASS: 6 images" in out.stdout and (tmp_path / "v" / "report.html").is_file()
    loaded = {canonicalize_name(d) for d in json.loads(out.stdout.split("LOADED ", 1)[1])}
    assert "onnx" in loaded and "onnxruntime" in loaded
    assert not {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "torch", "matplotlib"} & loaded
    assert loaded <= allowed, f"loaded but not installed by edgecam[onnx]: {sorted(loaded - allowed)}"


def test_cli_accepts_onnx(tmp_path):
    from click.testing import CliRunner

    from toolkit.cli.convert import convert

    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(convert, [str(DATA / "bn_head.onnx"), "-o", str(out), "--target-tensor",
                                          "/explained/Relu_output_0"])
    assert result.exit_code == 0, result.output
    assert "CAM mode       linear / all" in result.output and out.is_file()
    bad = CliRunner().invoke(convert, [str(DATA / "bn_head.onnx"), "-o", str(out), "--target-tensor", "nope"])
    assert bad.exit_code != 0 and "one of:" in bad.output and "Traceback" not in bad.output


# -- bad input: one-line errors ------------------------------------------------------------
def _tiny(inputs=1, opset=17, head_op=None, collapse=True):
    """Conv → Relu → GlobalAveragePool → Flatten → Gemm (→ head_op → Gemm), built with onnx.helper."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "fc"),
             numpy_helper.from_array(rng.normal(size=(3, 3)).astype(np.float32), "fc2")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"])]
    if collapse:
        nodes += [helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"])]
    else:
        nodes += [helper.make_node("Conv", ["r", "wc"], ["p"]), helper.make_node("Flatten", ["p"], ["f"])]
        inits.append(numpy_helper.from_array(rng.normal(size=(4, 4, 8, 8)).astype(np.float32), "wc"))
        inits[1] = numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "fc")
    nodes.append(helper.make_node("Gemm", ["f", "fc"], ["z"], transB=1))
    out = "z"
    if head_op:
        nodes += [helper.make_node(head_op, ["z"], ["h"]), helper.make_node("Gemm", ["h", "fc2"], ["y"], transB=1)]
        out = "y"
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
    if inputs == 2:
        graph_inputs.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 3, 8, 8]))
        nodes[0].input[0] = "x"
    graph = helper.make_graph(nodes, "tiny", graph_inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 3])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _save(model, path: Path, **kwargs) -> Path:
    onnx.save(model, str(path), **kwargs)
    return path


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and len(text) < 600
    return text


def test_fixed_batch_is_freed_when_the_graph_allows(tmp_path):
    """torch.onnx.export without dynamic_axes fixes the batch at 1; a Flatten head can take any batch."""
    path, ref = _fixture("flatten_linear")
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    model = ExplainableModel(convert_onnx(path, tmp_path / "x.onnx", self_check=False).path)
    assert model.backend.inputs["image"].shape[0] == -1
    assert len(model.explain_batch(list(ref["images"]))) == len(ref["images"])


def test_fixed_batch_kept_when_the_graph_needs_it(tmp_path):
    """A Reshape to the constant shape [1, -1] only works for one image: the batch stays 1."""
    from onnx import numpy_helper

    model = _tiny()
    flatten = next(n for n in model.graph.node if n.op_type == "Flatten")
    flatten.op_type = "Reshape"
    flatten.input.append("shape")
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, -1], np.int64), "shape"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value = 1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    result = convert_onnx(_save(model, tmp_path / "m.onnx"), tmp_path / "x.onnx")
    assert result.self_check.passed
    assert ExplainableModel(result.path).backend.inputs["image"].shape[0] == 1


def test_tiny_helper_model_converts(tmp_path):
    result = convert_onnx(_save(_tiny(), tmp_path / "m.onnx"), tmp_path / "x.onnx")
    assert result.metadata.cam_mode == "linear" and result.self_check.passed


def test_a_gate_from_another_tensor_is_still_refused(tmp_path):
    """Only x·sigmoid(x) is followed: a squeeze-excite style gate, x·sigmoid(W·x), is a real branch."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(4, 4)).astype(np.float32), "se"),
             numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "se"], ["s"], transB=1), helper.make_node("Sigmoid", ["s"], ["sg"]),
             helper.make_node("Mul", ["f", "sg"], ["m"]), helper.make_node("Gemm", ["m", "fc"], ["z"], transB=1)]
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])], inits)
    src = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "se.onnx")
    with pytest.raises(UnsupportedHeadError, match="combines 2 computed inputs") as info:
        convert_onnx(src, tmp_path / "x.onnx")
    _one_line(info)


@pytest.mark.parametrize("case, error, match", [
    ("two_inputs", ConversionError, "2 inputs .*exactly one image input"),
    ("no_spatial", UnsupportedHeadError, "No spatial tensor found.*Conv"),
    ("head_op", UnsupportedHeadError, "Softsign.*not an operator edgecam"),
    ("old_opset", ConversionError, "opset 11.*≥ 13"),
    ("bad_suffix", InputError, "must end with '.onnx' .*or '.tflite'"),
    ("int8_no_calibration", InputError, "calibration images"),
    ("not_onnx", ModelFileError, "not a readable ONNX model"),
    ("missing", ModelFileError, "does not exist"),
])
def test_bad_input_one_line(tmp_path, case, error, match):
    out = tmp_path / "x.onnx"
    options = {}
    src = tmp_path / "m.onnx"
    if case == "two_inputs":
        _save(_tiny(inputs=2), src)
    elif case == "no_spatial":
        _save(_tiny(collapse=False), src)
    elif case == "head_op":
        _save(_tiny(head_op="Softsign"), src)
    elif case == "old_opset":
        _save(_tiny(opset=11), src)
    elif case == "bad_suffix":
        _save(_tiny(), src)
        out = tmp_path / "x.txt"
    elif case == "int8_no_calibration":
        _save(_tiny(), src)
        options = {"quantize": "int8"}
    elif case == "not_onnx":
        src.write_bytes(b"definitely not protobuf \xff\xfe" * 10)
    with pytest.raises(error, match=match) as info:
        convert_onnx(src, out, **options)
    _one_line(info)


def test_missing_external_data(tmp_path):
    src = _save(_tiny(), tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                location="m.weights", size_threshold=0)
    (tmp_path / "m.weights").unlink()
    with pytest.raises(ModelFileError, match=r"external-data file\(s\) \['m.weights'\]") as info:
        convert_onnx(src, tmp_path / "x.onnx")
    _one_line(info)


def test_external_data_present_converts(tmp_path):
    src = _save(_tiny(), tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                location="m.weights", size_threshold=0)
    assert convert_onnx(src, tmp_path / "x.onnx").self_check.passed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=7000), junk=st.binary(max_size=64))
def test_damaged_files_fail_cleanly(tmp_path, cut, junk):
    """Truncated or corrupted exports raise an EdgecamError with one line, never a traceback."""
    data = (DATA / "gap_linear.onnx").read_bytes()
    src = tmp_path / "bad.onnx"
    src.write_bytes(data[:cut] + junk)
    try:
        convert_onnx(src, tmp_path / "x.onnx", self_check=False)
    except EdgecamError as exc:
        assert "\n" not in str(exc)


# -- optional: live comparison with PyTorch and pytorch-grad-cam -----------------------------
def test_live_pytorch_grad_cam(tmp_path):
    """When torch and grad-cam are installed: export afresh, convert, compare with pytorch-grad-cam."""
    for module in ("torch", "pytorch_grad_cam"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    names = ["mlp", "flatten_linear"]
    made = subprocess.run([sys.executable, str(DATA / "make_fixtures.py"), "--out", str(tmp_path), "--names",
                           ",".join(names)], capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    for name in names:
        ref = np.load(tmp_path / f"{name}.npz")
        result = convert_onnx(tmp_path / f"{name}.onnx", tmp_path / f"{name}.x.onnx", cam_method=str(ref["method"]))
        exps = _explain_all(ExplainableModel(result.path), ref["images"])
        assert [e.class_index for e in exps] == ref["classes"].tolist()
        assert min(pearson(e.cam, c) for e, c in zip(exps, ref["cam"])) >= 0.999


# -- int8 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(KINDS))
def test_int8_qdq_keeps_the_head_float_and_meets_the_keras_bounds(tmp_path, name):
    """int8 QDQ: the feature extractor is quantized, edgecam's head and the classifier head are not,
    and the maps meet the Keras path's int8 gate against pytorch-grad-cam (median, p05, top-1)."""
    from converters.quant import GATES

    path, ref = _fixture(name)
    result = convert_onnx(path, tmp_path / "q.onnx", quantize="int8", calibration=list(ref["images"]),
                          cam_method=str(ref["method"]), emit_baseline=True)
    assert result.metadata.quantization == "int8" and result.self_check.passed
    graph = onnx.load(str(result.path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    head = [n for n in graph.node if n.name.startswith("edgecam_head/") or n.op_type in ("Gemm", "MatMul")]
    assert head
    for node in head:  # no input of a head node comes straight from a DequantizeLinear
        assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input[1:]), node.name
    assert any(n.op_type == "DequantizeLinear" for n in onnx.load(str(result.baseline_path)).graph.node)
    exps = _explain_all(ExplainableModel(result.path), ref["images"])
    corr = [pearson(e.cam, c) for e, c in zip(exps, ref["cam"])]
    gate = GATES["int8"]
    assert np.mean([e.class_index == c for e, c in zip(exps, ref["classes"])]) >= gate.top1
    assert np.median(corr) >= gate.pearson_median and np.percentile(corr, 5) >= gate.pearson_p05, corr


def test_int8_weights_use_seven_bits():
    """x86 without VNNI saturates int16 sums of u8×s8 products in ONNX Runtime's integer kernels
    (the layernorm_head fixture's map fell to Pearson 0.63); 7-bit weights cannot saturate."""
    path, ref = _fixture("layernorm_head")
    from converters.onnx_in.quantize import quantize_int8

    model = onnx.load(str(path))
    x = ((ref["images"] / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(0, 3, 1, 2)
    quantized = onnx.load_from_string(quantize_int8(model.SerializeToString(), x.astype(np.float32), {"image": "input"}))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in quantized.graph.initializer}
    convs = [n for n in quantized.graph.node if n.op_type == "DequantizeLinear" and weights.get(n.input[0]) is not None
             and weights[n.input[0]].dtype == np.int8 and weights[n.input[0]].ndim == 4]
    assert convs
    for node in convs:
        # |w| ≤ 64: two products with a uint8 activation sum to at most 2·255·64 = 32640 < 2**15.
        assert np.abs(weights[node.input[0]].astype(int)).max() <= 64, node.name


# -- --approximate ---------------------------------------------------------------------------
def test_approximate_for_an_unknown_head_operator(tmp_path):
    src = _save(_tiny(head_op="Softsign"), tmp_path / "m.onnx")
    with pytest.raises(UnsupportedHeadError, match="or --approximate"):
        convert_onnx(src, tmp_path / "x.onnx")
    result = convert_onnx(src, tmp_path / "x.onnx", approximate=True)
    meta = result.metadata
    assert (meta.cam_mode, meta.cam_output) == ("approximate", "all") and meta.class_weights.shape == (4, 3)
    assert ExplainableModel(result.path).explain(np.zeros((8, 8, 3), np.uint8)).approximate
    assert result.self_check.top1_agreement == 1.0 and result.self_check.pearson_median > 0.5


def _head_values(name):
    """The fixture's model, tables, head and feature maps of its images (original graph)."""
    from converters.onnx_in.check import ReferenceRun
    from converters.onnx_in.graph import Tables, find_head, image_input

    path, ref = _fixture(name)
    model = onnx.load(str(path))
    tables = Tables(model)
    head = find_head(model, tables)
    x = ((ref["images"] / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32)
    return model, tables, head, ReferenceRun(model, head, image_input(model)).run(x)[head.target], ref


def test_finite_difference_gradients_match_the_exact_ones():
    """The approximate path's differentiation, checked on heads whose gradient is known."""
    from converters.onnx_in.analysis import analyze
    from converters.onnx_in.approximate import HeadGradients

    # Linear head: the finite differences equal the folded Grad-CAM weights.
    model, tables, head, fmaps, _ = _head_values("gap_linear")
    np.testing.assert_allclose(HeadGradients(model, head).alpha(fmaps[0]), analyze(head, tables).alpha,
                               rtol=2e-3, atol=1e-6)
    # ReLU MLP head: per-image maps agree with pytorch-grad-cam.
    model, _, head, fmaps, ref = _head_values("mlp")
    maps = HeadGradients(model, head).reference(fmaps, ref["classes"])
    assert min(pearson(m, c) for m, c in zip(maps, ref["cam"])) >= 0.99


# -- LiteRT output ---------------------------------------------------------------------------
def test_tflite_falls_back_to_onnx_for_gradient_heads(tmp_path, caplog):
    path, _ = _fixture("mlp")
    result = convert_onnx(path, tmp_path / "x.tflite", self_check=False)
    assert result.path == tmp_path / "x.onnx" and result.format == "onnx" and result.path.is_file()
    assert not (tmp_path / "x.tflite").exists()
    assert "No LiteRT output" in caplog.text and "Writing ONNX instead" in caplog.text


@pytest.mark.parametrize("name", ["gap_linear", "flatten_linear", "nhwc_input"])
def test_tflite_through_onnx2tf(tmp_path, name):
    """With TensorFlow and onnx2tf installed: LiteRT output agrees with pytorch-grad-cam too."""
    for module in ("tensorflow", "onnx2tf"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    path, ref = _fixture(name)
    result = convert_onnx(path, tmp_path / "x", format="both", cam_method=str(ref["method"]),
                          calibration=list(ref["images"]))
    lite = next(r for r in result.all if r.format == "tflite")
    assert lite.path.suffix == ".tflite" and lite.self_check.passed
    exps = _explain_all(ExplainableModel(lite.path), ref["images"])
    assert [e.class_index for e in exps] == ref["classes"].tolist()
    assert min(pearson(e.cam, c) for e, c in zip(exps, ref["cam"])) >= 0.999


# -- edgecam validate ORIGINAL.onnx EXPLAINED.onnx -------------------------------------------
def test_validate_against_the_original_onnx(tmp_path):
    """No TensorFlow: the original ONNX graph is the host reference of `edgecam validate`."""
    import cv2

    path, ref = _fixture("mlp")
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(ref["images"]):
        cv2.imwrite(str(images / f"{i}.png"), image[..., ::-1])
    explained = convert_onnx(path, tmp_path / "x.onnx", self_check=False).path
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from toolkit.cli import main\n"
        f"sys.argv = ['edgecam', 'validate', {str(path)!r}, {str(explained)!r}, '--images', {str(images)!r}, "
        f"'--out', {str(tmp_path / 'out')!r}, '--quiet', '--min-pearson', '0.999', '--min-top1', '1.0']\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-1500:] + out.stderr[-1500:]
    assert "PASS: 6 images" in out.stdout
    from converters.onnx_in.host import OnnxHostModel

    with pytest.raises(InputError, match="gradcam or hirescam"):
        OnnxHostModel(path, method="scorecam")


# -- every head operator against finite differences (hypothesis) -------------------------------
ACTIVATIONS = {
    "Relu": {}, "LeakyRelu": {"alpha": 0.1}, "Sigmoid": {}, "Tanh": {}, "Elu": {"alpha": 0.7},
    "HardSigmoid": {"alpha": 0.3, "beta": 0.4}, "HardSwish": {}, "Softplus": {}, "Clip": {},
    "Swish": {},  # not an ONNX operator: Mul(h, Sigmoid(h)), as torch exports nn.SiLU
}
COLLAPSES = ("GlobalAveragePool", "ReduceMean", "GlobalMaxPool", "ReduceMax", "Flatten")
SCALARS = ("Mul", "Sub", "Div", "Add")


def _head_model(act: str, collapse: str, scalar: str, seed: int):
    """x → Identity → A (N, 3, 4, 4) → collapse → Gemm → act → scalar op → MatMul → Add → logits."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    width = 3 * 16 if collapse == "Flatten" else 3
    # Weights scaled so pre-activations stay O(1): saturated units would leave gradients below the
    # float32 finite differences' noise.
    inits = {"w1": rng.normal(size=(6, width)) / np.sqrt(width), "w2": rng.normal(size=(6, 4)), "b2": rng.normal(size=(4,)),
             "c": rng.uniform(0.5, 1.5, size=(6,)), "lo": np.array(-0.5), "hi": np.array(0.8)}
    nodes = [helper.make_node("Identity", ["x"], ["a"])]
    if collapse in ("ReduceMean", "ReduceMax"):
        nodes.append(helper.make_node(collapse, ["a"], ["p"], axes=[2, 3], keepdims=0))
    elif collapse == "Flatten":
        nodes.append(helper.make_node("Flatten", ["a"], ["p"]))
    else:
        nodes += [helper.make_node(collapse, ["a"], ["p4"]), helper.make_node("Flatten", ["p4"], ["p"])]
    nodes.append(helper.make_node("Gemm", ["p", "w1"], ["h"], transB=1))
    extra = ["lo", "hi"] if act == "Clip" else []
    if act == "Swish":  # both operand orders of the Mul
        nodes += [helper.make_node("Sigmoid", ["h"], ["sg"]),
                  helper.make_node("Mul", ["h", "sg"] if seed % 2 else ["sg", "h"], ["r"])]
    else:
        nodes.append(helper.make_node(act, ["h", *extra], ["r"], **ACTIVATIONS[act]))
    nodes.append(helper.make_node(scalar, ["r", "c"] if scalar != "Sub" else ["c", "r"], ["s"]))
    nodes += [helper.make_node("MatMul", ["s", "w2"], ["m"]), helper.make_node("Add", ["m", "b2"], ["z"])]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _finite_difference_gradcam(model, x: np.ndarray, cls: int) -> np.ndarray:
    """Grad-CAM of the input (A = Identity(x)) with ∂z/∂x by central differences, float64 steps."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    eps = 1e-3
    base = x[None].astype(np.float64)
    steps = np.eye(x.size).reshape(x.size, *x.shape) * eps
    up = session.run(None, {"x": (base + steps).astype(np.float32)})[0][:, cls]
    down = session.run(None, {"x": (base - steps).astype(np.float32)})[0][:, cls]
    grad = ((up - down) / (2 * eps)).reshape(x.shape)  # (3, 4, 4)
    return np.maximum(np.einsum("chw,c->hw", x, grad.mean(axis=(1, 2))), 0)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(act=st.sampled_from(sorted(ACTIVATIONS)), collapse=st.sampled_from(COLLAPSES),
       scalar=st.sampled_from(SCALARS), seed=st.integers(0, 10_000))
@example(act="Tanh", collapse="Flatten", scalar="Mul", seed=2343)  # once saturated, see _head_model
@example(act="Swish", collapse="GlobalAveragePool", scalar="Add", seed=1)  # Mul(h, Sigmoid(h))
@example(act="Swish", collapse="Flatten", scalar="Div", seed=2)  # Mul(Sigmoid(h), h)
def test_head_operators_match_finite_differences(tmp_path, act, collapse, scalar, seed):
    """The in-graph gradient of every supported operator agrees with central differences of the original."""
    model = _head_model(act, collapse, scalar, seed)
    src = _save(model, tmp_path / "head.onnx")
    result = convert_onnx(src, tmp_path / "x.onnx", self_check=False, input_scale=[1 / 64], input_offset=[-2.0])
    edge = ExplainableModel(result.path)
    image = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), np.uint8)
    x = (image.astype(np.float32) / 64 - 2.0).transpose(2, 0, 1)
    exp = edge.explain(image)
    expected = _finite_difference_gradcam(model, x, exp.class_index)
    if np.ptp(expected) < 1e-6:  # a flat map (every unit saturated): nothing to correlate
        assert np.ptp(exp.cam) < 1e-4
        return
    assert pearson(exp.cam, expected) >= 0.99, (act, collapse, scalar, seed)
