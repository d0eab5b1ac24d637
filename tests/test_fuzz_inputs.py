"""Fuzzing: image checks, image loaders and the JSONL log reader never fail with anything but
edgecam's own errors (same style as test_fuzz_metadata.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from firmware_host.errors import EdgecamError, InputError
from firmware_host.metadata import read_tflite_metadata
from firmware_host.preprocess import check_image, preprocess
from firmware_host.sinks import read_jsonl
from firmware_host.sources import IMAGE_EXTENSIONS, open_source, read_image

DATA = Path(__file__).parent / "data"
PRE = read_tflite_metadata(DATA / "tiny_fog.tflite").preprocessing
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture])

dtypes = st.sampled_from([np.uint8, np.int8, np.uint16, np.int32, np.float16, np.float32, np.float64, np.bool_])
shapes = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=9)


def _real_image_bytes(seed: int, suffix: str) -> bytes:
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(suffix, img)
    assert ok
    return buf.tobytes()


REAL = {s: _real_image_bytes(0, s) for s in (".png", ".jpg", ".bmp", ".webp", ".tif")}


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width × height`` pixels (its data is a few bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


# OpenCV raises cv2.error (not None) for images above CV_IO_MAX_IMAGE_PIXELS: found by hand
# while fuzzing; before read_image it ended a whole `edgecam run` over a folder.
HUGE_PNG = _png_header(200_000, 200_000)


@st.composite
def image_files(draw):
    """Bytes that look like an image file: random, or a real PNG/JPEG/… flipped and cut."""
    suffix = draw(st.sampled_from(sorted(REAL) + [".jpeg", ".ppm", ".pgm"]))
    if draw(st.integers(0, 9)) == 0:
        return ".png", _png_header(draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1)))
    if suffix in REAL and draw(st.booleans()):
        blob = bytearray(REAL[suffix])
        for _ in range(draw(st.integers(0, 8))):
            blob[draw(st.integers(0, len(blob) - 1))] = draw(st.integers(0, 255))
        blob = blob[: draw(st.integers(0, len(blob)))]
        return suffix, bytes(blob)
    return suffix, draw(st.binary(max_size=600))


# -- check_image / preprocess ---------------------------------------------------------------


@FUZZ
@given(hnp.arrays(dtypes, shapes))
def test_check_image_any_array(arr):
    try:
        image = check_image(arr)
    except EdgecamError:
        return
    assert image.dtype == np.uint8 and image.ndim in (2, 3)
    x = preprocess(image, PRE)
    assert x.shape == (PRE.height, PRE.width, PRE.channels) and x.dtype == np.float32
    assert np.isfinite(x).all()


@FUZZ
@given(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(0, 255), max_size=6),
                 st.binary(max_size=8), st.floats()))
def test_check_image_not_an_array(value):
    with pytest.raises(InputError, match="must be a numpy array or PIL image"):
        check_image(value)


@FUZZ
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 3])),
                  elements=st.integers(0, 255)),
       st.sampled_from(["rgb", "bgr", "gray"]), st.integers(1, 33), st.integers(1, 33))
def test_preprocess_any_size_and_colour(arr, color, height, width):
    from firmware_host.metadata import Preprocessing

    pre = Preprocessing(height=height, width=width, color=color, scale=(1 / 255,), offset=(0.0,))
    x = preprocess(check_image(arr), pre)
    assert x.shape == (height, width, pre.channels)
    assert x.min() >= 0.0 and x.max() <= 1.0


# -- image files --------------------------------------------------------------------------


@FUZZ
@given(image_files())
def test_read_image_any_bytes(tmp_path_factory, file):
    suffix, data = file
    path = tmp_path_factory.mktemp("img") / f"x{suffix}"
    path.write_bytes(data)
    image = read_image(path)
    if image is not None:  # decoded: a valid BGR uint8 image, never a half-checked array
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.size > 0


@FEW
@given(st.lists(image_files(), min_size=1, max_size=5), st.booleans())
def test_load_images_folder_of_random_files(tmp_path_factory, files, with_good):
    from converters.export import load_images

    root = tmp_path_factory.mktemp("calib")
    for i, (suffix, data) in enumerate(files):
        (root / f"{i:02d}{suffix}").write_bytes(data)
    if with_good:
        (root / "zz_good.png").write_bytes(REAL[".png"])
    try:
        images, skipped = load_images(root)
    except InputError as exc:
        assert not with_good and "no readable image" in str(exc)
        return
    assert len(images) + skipped == len(files) + with_good
    for image in images:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    if with_good:
        assert any(img.shape == (12, 16, 3) for img in images)


@FEW
@given(st.lists(image_files(), min_size=1, max_size=5))
def test_run_folder_source_of_random_files(tmp_path_factory, files):
    """``edgecam run --source FOLDER``: bad files are counted as corrupt, good ones delivered."""
    root = tmp_path_factory.mktemp("frames")
    for i, (suffix, data) in enumerate(files):
        (root / f"{i:02d}{suffix}").write_bytes(data)
    (root / "zz_good.png").write_bytes(REAL[".png"])
    frames = []
    with open_source(str(root)) as src:
        while True:
            frame = src.read(timeout=5.0)
            if frame is None:
                assert src.ended
                break
            frames.append(frame)
        stats = src.stats
    assert stats.corrupt + len(frames) == len(files) + 1
    assert frames[-1].image.shape == (12, 16, 3)
    for frame in frames:
        assert frame.image.dtype == np.uint8 and frame.image.shape[2] == 3


def test_oversized_image_is_skipped_not_fatal(tmp_path):
    from converters.export import load_images

    (tmp_path / "a_huge.png").write_bytes(HUGE_PNG)
    (tmp_path / "b_good.png").write_bytes(REAL[".png"])
    assert read_image(tmp_path / "a_huge.png") is None
    images, skipped = load_images(tmp_path)
    assert len(images) == 1 and skipped == 1
    with open_source(str(tmp_path)) as src:
        frame = src.read(timeout=5.0)
        assert frame is not None and frame.image.shape == (12, 16, 3)
        assert src.read(timeout=5.0) is None and src.ended
        assert src.stats.corrupt == 1


def test_image_extensions_cover_the_fuzzed_suffixes():
    assert set(REAL) | {".jpeg", ".ppm", ".pgm"} <= set(IMAGE_EXTENSIONS)


# -- JSONL log reader ---------------------------------------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(st.binary(max_size=2000))
def test_read_jsonl_arbitrary_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("log") / "run.jsonl"
    path.write_bytes(data)
    try:
        records = read_jsonl(path)
    except EdgecamError:
        return
    assert all(isinstance(r, dict) for r in records)


@FUZZ
@given(st.lists(json_values, max_size=6), st.integers(0, 400), st.booleans())
def test_read_jsonl_arbitrary_json_lines(tmp_path_factory, values, cut, deep):
    """Valid JSON of any type per line, then cut anywhere (a power loss): records or InputError."""
    lines = [json.dumps(v) for v in values]
    if deep:
        lines.append("[" * 100_000 + "]" * 100_000)  # nesting deeper than Python's recursion limit
    text = "\n".join(lines) + "\n"
    path = tmp_path_factory.mktemp("log") / "run.jsonl"
    path.write_text(text[: len(text) - cut if cut < len(text) else 0])
    try:
        records = read_jsonl(path)
    except EdgecamError:
        return
    assert all(isinstance(r, dict) for r in records)


def test_read_jsonl_missing_file(tmp_path):
    with pytest.raises(InputError, match="Cannot read log"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="Cannot read log"):
        read_jsonl(tmp_path)  # a directory


def test_read_jsonl_non_object_line(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text('{"frame": 0}\n[1, 2]\n{"frame": 1}\n')
    with pytest.raises(InputError, match=r"line 2 is a JSON array, not an object"):
        read_jsonl(path)


# -- edgecam validate --from-log: its tolerant reader (when toolkit.validate has landed) ---------


record_values = st.one_of(
    json_values, st.integers(-10, 10), st.floats(), st.just(10**400), st.just("1e400"),
    st.lists(st.lists(st.floats(), min_size=0, max_size=3), max_size=3),
)


@FUZZ
@given(st.lists(st.one_of(
    st.dictionaries(st.sampled_from(["frame", "class_index", "predicted_index", "probabilities", "cam",
                                     "frame_path", "timestamp", "peak"]), record_values, max_size=8),
    json_values,
), max_size=5), st.integers(0, 200), st.booleans())
def test_validate_log_reader_never_crashes(tmp_path_factory, records, cut, deep):
    validate = pytest.importorskip("toolkit.validate")
    lines = [json.dumps(r) for r in records]
    if deep:
        lines.append("[" * 100_000 + "]" * 100_000)
    text = "\n".join(lines) + "\n"
    path = tmp_path_factory.mktemp("log") / "run.jsonl"
    path.write_text(text[: max(0, len(text) - cut)])
    try:
        reader = validate.RunLogReader(path, feature_map_shape=None, num_classes=None)
        for frame in reader:
            assert frame.cam.ndim == 2 and np.isfinite(frame.cam).all()
            assert 0 <= frame.class_index < frame.probabilities.size
    except EdgecamError:
        pass


def test_validate_log_reader_found_cases(tmp_path):
    """What the fuzzer found in RunLogReader: OverflowError (1e400 / huge ints) and
    RecursionError (deep nesting) escaped; they are now counted as invalid / malformed."""
    validate = pytest.importorskip("toolkit.validate")
    good = {"frame": 0, "frame_path": "f.png", "cam": [[1.0]], "probabilities": [0.2, 0.8], "class_index": 1}
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join([
        json.dumps(good),
        json.dumps(good).replace('"class_index": 1', '"class_index": 1e400'),
        json.dumps({**good, "probabilities": [10**400, 0.0]}),
        "[" * 100_000 + "]" * 100_000,
    ]) + "\n")
    reader = validate.RunLogReader(path)
    frames = list(reader)
    assert [f.frame for f in frames] == [0]
    assert reader.skipped == {"malformed": 1, "no_frame_path": 0, "invalid": 2}
