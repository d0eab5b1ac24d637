"""The tflite-runtime fallback, run for real: a venv with tflite-runtime and numpy<2, no ai-edge-litert.

32-bit Raspberry Pi OS (armv7l) and older ARM Pythons get their interpreter from
``tflite-runtime`` (``firmware_host.backends.litert`` falls back to it). This builds that
environment on this host with tflite-runtime 2.14.0 (its last release and the only one with
CPython 3.11 wheels; the armv7l pin in ``toolkit/deploy/requirements.py`` is 2.13.0, for
cp39/cp310) and the armv7l numpy/OpenCV pins, with edgecam's own wheel installed ``--no-deps`` on top, and
checks that ``ExplainableModel``, ``edgecam run`` and ``edgecam doctor`` give the same outputs as
with LiteRT on the committed float32 and int8 tiny models.

Tolerances: the two interpreters are different builds of the same kernels: float32 within 1e-5;
int8 within one quantisation step of the output (1/256) for probabilities; CAMs within 1 % of
the map's maximum (measured here: float32 |Δp| 6e-8, CAM 1e-6 of the maximum; int8 |Δp| 0,
CAM 0.4 %).

The venv (without edgecam, which is reinstalled from the tree each run) is cached under the user
cache directory, keyed by the hash of its requirements and this Python. tflite-runtime has no wheel
for Python 3.12+: the test skips there with that reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
MODELS = {"float32": DATA / "tiny_fog.tflite", "int8": DATA / "tiny_fog_int8.tflite"}
IMAGE = DATA / "tiny_fog_input.png"
PROB_ATOL = {"float32": 1e-5, "int8": 1 / 256 + 1e-6}
CAM_RTOL = 0.01

pytestmark = [pytest.mark.tflite_runtime, pytest.mark.timeout(900)]


TFLITE_RUNTIME = "2.14.0"


def _requirements():
    from toolkit.deploy.requirements import DEVICE_PINS

    numpy1 = next(p for p in DEVICE_PINS if p.name == "numpy" and p.machine == "armv7l")
    # The device set for armv7l, from the same pins (OpenCV, click, tqdm: machine-independent).
    rest = [f"{p.name}=={p.version}" for p in DEVICE_PINS if p.machine is None and p.applies("3.11", "x86_64")]
    return [f"tflite-runtime=={TFLITE_RUNTIME}", f"numpy=={numpy1.version}", *rest]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "edgecam-tests")


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """The cached tflite-runtime venv with this tree's edgecam wheel installed; yields its bin/."""
    if sys.version_info >= (3, 12):
        pytest.skip(f"tflite-runtime has no wheel for Python {sys.version_info[0]}.{sys.version_info[1]} "
                    "(its last release, 2.14.0, stops at 3.11)")
    if sys.platform != "linux":
        pytest.skip("tflite-runtime ships Linux wheels only")
    requirements = _requirements()
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:16]
    root = _cache_dir() / f"tflite-runtime-venv-{key}"
    bin_dir = root / "bin"
    if not (root / ".complete").is_file():
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True)
        proc = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--only-binary=:all:",
                               *requirements], capture_output=True, text=True, env=_clean_env(), timeout=600)
        if proc.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(f"cannot install {' '.join(requirements)} (no network?): {proc.stderr.strip()[-400:]}")
        (root / ".complete").write_text("\n".join(requirements) + "\n")
    from toolkit.deploy.bundle import build_wheel

    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                    str(wheel)], check=True, capture_output=True, env=_clean_env(), timeout=300)
    return bin_dir


def _in_venv(bin_dir: Path, *args, cwd=None):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=_clean_env(),
                          cwd=cwd or bin_dir, timeout=300)


EXPLAIN = textwrap.dedent("""
    import json, sys
    import cv2
    from firmware_host.backends.litert import load_interpreter_class
    from firmware_host.model import ExplainableModel

    image = cv2.imread(sys.argv[1])[..., ::-1]
    out = {"interpreter": load_interpreter_class()[1], "litert_importable": True}
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        out["litert_importable"] = False
    for name, path in zip(sys.argv[2::2], sys.argv[3::2]):
        model = ExplainableModel(path)
        out[name] = [(e.probabilities.tolist(), e.cam.tolist(), e.label)
                     for e in (model.explain(image, class_index=k) for k in range(len(model.classes)))]
    print(json.dumps(out))
""")


def test_environment_has_tflite_runtime_and_numpy_1_only(venv):
    proc = _in_venv(venv, venv / "python", "-c", "import numpy, tflite_runtime; print(numpy.__version__, tflite_runtime.__version__)")
    assert proc.returncode == 0, proc.stderr
    numpy_version, tflite_version = proc.stdout.split()
    assert numpy_version.startswith("1.") and tflite_version == _requirements()[0].split("==")[1]
    assert _in_venv(venv, venv / "python", "-c", "import ai_edge_litert").returncode == 1
    assert _in_venv(venv, venv / "python", "-c", "import tensorflow").returncode == 1


def test_explainable_model_matches_litert_float32_and_int8(venv):
    import cv2

    from firmware_host.backends.litert import load_interpreter_class
    from firmware_host.model import ExplainableModel

    assert load_interpreter_class()[1] == "ai-edge-litert"  # this process: the reference
    args = [a for name, path in MODELS.items() for a in (name, path)]
    proc = _in_venv(venv, venv / "python", "-c", EXPLAIN, IMAGE, *args)
    assert proc.returncode == 0, proc.stderr
    fallback = json.loads(proc.stdout)
    assert fallback["interpreter"] == "tflite-runtime" and not fallback["litert_importable"]

    image = cv2.imread(str(IMAGE))[..., ::-1]
    for name, path in MODELS.items():
        model = ExplainableModel(path)
        assert len(fallback[name]) == len(model.classes) == 4
        for k, (probs, cam, label) in enumerate(fallback[name]):
            reference = model.explain(image, class_index=k)
            np.testing.assert_allclose(probs, reference.probabilities, atol=PROB_ATOL[name], rtol=0)
            cam = np.asarray(cam)
            assert cam.shape == reference.cam.shape == (16, 16)
            assert np.abs(cam - reference.cam).max() <= CAM_RTOL * reference.cam.max() + 1e-9
            assert label == reference.label


@pytest.mark.parametrize("precision", sorted(MODELS))
def test_edgecam_run_log_matches_litert(venv, precision, tmp_path):
    import cv2

    video = tmp_path / "road.avi"
    img = cv2.resize(cv2.imread(str(IMAGE)), (64, 48))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(8):
        writer.write(np.clip(img.astype(int) + 12 * i - 40, 0, 255).astype(np.uint8))
    writer.release()
    model = MODELS[precision]
    fallback = _in_venv(venv, venv / "edgecam", "run", model, "--source", video, "--log", tmp_path / "fallback.jsonl")
    assert fallback.returncode == 0, fallback.stdout + fallback.stderr
    host = subprocess.run([sys.executable, "-m", "toolkit", "run", str(model), "--source", str(video), "--log",
                           str(tmp_path / "litert.jsonl")], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert host.returncode == 0, host.stdout + host.stderr
    ours, ref = ([json.loads(line) for line in (tmp_path / f).read_text().splitlines()[1:]]  # after the header
                 for f in ("fallback.jsonl", "litert.jsonl"))
    assert [r["frame"] for r in ours] == [r["frame"] for r in ref] == list(range(8))
    for a, b in zip(ours, ref):
        assert (a["label"], a["predicted_index"], a["class_index"]) == (b["label"], b["predicted_index"], b["class_index"])
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=PROB_ATOL[precision] + 1e-6, rtol=0)
        cam_a, cam_b = np.asarray(a["cam"]), np.asarray(b["cam"])
        assert cam_a.shape == cam_b.shape and np.abs(cam_a - cam_b).max() <= CAM_RTOL * cam_b.max() + 1e-6


def test_edgecam_doctor_reports_tflite_runtime(venv):
    doctor = _in_venv(venv, venv / "edgecam", "doctor", "--model", MODELS["int8"])
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    version = _requirements()[0].split("==")[1]
    assert f"interpreter  tflite-runtime {version}" in doctor.stdout
    assert "numpy        1." in doctor.stdout and "tensorflow   not needed, not imported" in doctor.stdout
    assert "explains a 32×32 test frame" in doctor.stdout
