"""firmware_host.imageio: one listing rule for every command; sizes from headers; bombs refused.

The header parser is checked against OpenCV's own decode of real files (the independent
reference), and the bomb tests measure the peak RSS of each command in a subprocess.
"""

import logging
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_host import imageio
from firmware_host.errors import InputError
from firmware_host.imageio import (
    ImageTooLargeError,
    image_header,
    list_images,
    load_image,
    read_image,
    scan_images,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
SOME = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
# The suffixes OpenCV writes, with the header format edgecam parses for each.
ENCODED = {".png": "png", ".jpg": "jpeg", ".bmp": "bmp", ".webp": "webp", ".tiff": "tiff", ".ppm": "pnm",
           ".pgm": "pnm", ".pbm": "pnm"}


def _encode(suffix: str, height: int, width: int, seed: int = 0, params=()) -> bytes:
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    if suffix in (".pgm", ".pbm"):
        img = img[..., 0]
    ok, buf = cv2.imencode(suffix, img, list(params))
    assert ok
    return buf.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A *valid* 8-bit gray PNG of zeros: ~1 KB per MB of pixels (deflate's ratio limit)."""
    comp = zlib.compressobj(9)
    block = b"\x00" * (1 + width) * 500
    rows, parts = height, []
    while rows > 0:
        n = min(rows, 500)
        parts.append(comp.compress(block[: n * (1 + width)]))
        rows -= n
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


# -- headers against OpenCV -------------------------------------------------------------------
@SOME
@given(st.sampled_from(sorted(ENCODED)), st.integers(1, 70), st.integers(1, 70), st.booleans())
def test_header_size_matches_what_opencv_decodes(tmp_path_factory, suffix, height, width, progressive):
    import cv2

    params = (cv2.IMWRITE_JPEG_PROGRESSIVE, 1) if suffix == ".jpg" and progressive else ()
    data = _encode(suffix, height, width, params=params)
    header = image_header(data)
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert (header.format, header.height, header.width) == (ENCODED[suffix],) + reference.shape[:2]
    assert header.progressive == bool(params)
    path = tmp_path_factory.mktemp("h") / f"x{suffix}"
    path.write_bytes(data)
    np.testing.assert_array_equal(load_image(path), reference)
    np.testing.assert_array_equal(read_image(path, rgb=True), reference[..., ::-1])


@SOME
@given(st.binary(max_size=300), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"BM", b"II*\x00",
                                                  b"MM\x00*", b"II+\x00", b"P6", b"RIFF\0\0\0\0WEBPVP8X"]))
def test_any_header_bytes_give_a_size_or_an_input_error(tail, head):
    try:
        header = image_header(head + tail)
    except InputError:
        return
    assert header.width >= 1 and header.height >= 1


@SOME
@given(st.sampled_from([".png", ".jpg", ".bmp", ".webp", ".tiff"]), st.integers(0, 400), st.binary(max_size=40))
def test_damaged_files_never_raise_anything_else(tmp_path_factory, suffix, cut, junk):
    data = _encode(suffix, 20, 30)
    path = tmp_path_factory.mktemp("d") / f"x{suffix}"
    path.write_bytes(data[:cut] + junk)
    try:
        image = load_image(path)
    except InputError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        assert read_image(path) is None
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@pytest.mark.parametrize("fmt", ["png", "bmp", "tiff", "webp", "pnm"])
def test_header_over_the_limit_is_refused_before_decoding(tmp_path, fmt):
    data = _encode({"png": ".png", "bmp": ".bmp", "tiff": ".tiff", "webp": ".webp", "pnm": ".ppm"}[fmt], 30, 40)
    path = tmp_path / "x.img"
    path.write_bytes(data)
    assert load_image(path, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageTooLargeError, match=r"header says 40x30 = 1,200 pixels, over the limit of 1,199 .*"
                                                 r"EDGECAM_MAX_IMAGE_PIXELS"):
        load_image(path, max_pixels=1199)
    assert read_image(path, max_pixels=1199) is None


def test_baseline_jpeg_over_the_limit_is_decoded_reduced(tmp_path):
    import cv2

    path = tmp_path / "big.jpg"
    path.write_bytes(_encode(".jpg", 400, 600))
    for limit, flag in [(600 * 400, cv2.IMREAD_COLOR), (300 * 200, cv2.IMREAD_REDUCED_COLOR_2),
                        (150 * 100, cv2.IMREAD_REDUCED_COLOR_4), (75 * 50, cv2.IMREAD_REDUCED_COLOR_8)]:
        np.testing.assert_array_equal(load_image(path, max_pixels=limit), cv2.imread(str(path), flag))
    with pytest.raises(ImageTooLargeError, match="600x400"):
        load_image(path, max_pixels=75 * 50 - 1)
    progressive = tmp_path / "prog.jpg"
    progressive.write_bytes(_encode(".jpg", 400, 600, params=(cv2.IMWRITE_JPEG_PROGRESSIVE, 1)))
    with pytest.raises(ImageTooLargeError):  # its decoder buffers the whole image: never reduced
        load_image(progressive, max_pixels=300 * 200)


def test_limit_setting_env_and_module(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    path.write_bytes(_encode(".png", 30, 40))
    monkeypatch.setenv("EDGECAM_MAX_IMAGE_PIXELS", "1000")
    assert imageio.max_image_pixels() == 1000 and read_image(path) is None
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 5000)
    assert read_image(path).shape == (30, 40, 3)
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", None)
    for bad in ("lots", "-3", "1e400", "nan", "2.5"):
        monkeypatch.setenv("EDGECAM_MAX_IMAGE_PIXELS", bad)
        with pytest.raises(InputError, match="EDGECAM_MAX_IMAGE_PIXELS must be a whole number"):
            imageio.max_image_pixels()
    monkeypatch.delenv("EDGECAM_MAX_IMAGE_PIXELS")
    assert imageio.max_image_pixels() == imageio.DEFAULT_MAX_IMAGE_PIXELS


# -- the listing rule --------------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path):
    png = _encode(".png", 12, 16)
    root = tmp_path / "images"
    for rel in ["b.png", "a.JPG", "sub/c.png", "sub/deeper/d.webp", ".hidden.png", ".cache/e.png",
                "notes.txt", "sub/no_suffix"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png)
    os.mkfifo(root / "pipe.png")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "linked.png").write_bytes(png)
    (root / "link_dir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "link_file.png").symlink_to(root / "b.png")
    return root


def test_listing_rule(tree, caplog):
    rel = lambda paths: [p.relative_to(tree).as_posix() for p in paths]  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="edgecam.imageio"):
        listing = scan_images(tree)
    assert rel(listing.images) == ["a.JPG", "b.png", "link_file.png", "sub/c.png", "sub/deeper/d.webp"]
    assert rel(listing.others) == ["notes.txt", "sub/no_suffix"]
    assert rel(listing.special) == ["pipe.png"]
    assert "pipe.png': not a regular file" in caplog.text
    assert rel(list_images(tree, recursive=False)) == ["a.JPG", "b.png", "link_file.png"]
    with pytest.raises(InputError, match="does not exist or is not a directory"):
        list_images(tree / "b.png")


def test_every_command_sees_the_same_images(tree):
    """convert --calibration, validate --images, dataset --images, explain and run read one set."""
    from converters.export import load_images
    from firmware_host.sources import open_source
    from toolkit.datasets.photos import load_photos
    from toolkit.explain.images import collect_images
    from toolkit.validate import iter_image_files

    expected = [p.resolve() for p in list_images(tree)]
    assert collect_images([tree]) == list(dict.fromkeys(expected))  # explain drops the link's duplicate
    assert [p.resolve() for p in iter_image_files(tree) if imageio.is_image_file(p)] == expected
    images, skipped = load_images(tree)
    assert len(images) == len(expected) and skipped == 3  # notes.txt, no_suffix, the FIFO
    photos = load_photos(tree)
    assert [p.resolve() for p, _ in photos] == expected
    with open_source(str(tree)) as src:  # run: this folder's frames only, the FIFO skipped
        names = []
        while (frame := src.read(timeout=5.0)) is not None:
            names.append(Path(frame.name).name)
    assert names == [p.name for p in list_images(tree, recursive=False)]


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "frame.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_image(fifo)
    assert read_image(fifo) is None


# -- predict -------------------------------------------------------------------------------------
def _cli(*args, env=None, timeout=300):
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=timeout)


def test_predict_skips_a_fifo_and_keeps_same_named_overlays_apart(tmp_path, tiny_fog_model):
    import cv2

    src = cv2.imread(str(DATA / "tiny_fog_input.png"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "x.png"), src)
    cv2.imwrite(str(tmp_path / "b" / "x.png"), src[:, ::-1])  # mirrored: a different overlay
    cv2.imwrite(str(tmp_path / "x.jpg"), src)
    os.mkfifo(tmp_path / "pipe.png")
    out = _cli("predict", tiny_fog_model, tmp_path / "a" / "x.png", tmp_path / "pipe.png", tmp_path / "b" / "x.png",
               tmp_path / "x.jpg", "--out", tmp_path / "out", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pipe.png: skipped (" in out.stderr and "not a regular file" in out.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["x-2.overlay.png", "x-3.overlay.png", "x.overlay.png"]
    first = cv2.imread(str(tmp_path / "out" / "x.overlay.png"))
    second = cv2.imread(str(tmp_path / "out" / "x-2.overlay.png"))
    assert not np.array_equal(first, second)


def test_predict_names_the_pixel_limit(tmp_path, tiny_fog_model):
    path = tmp_path / "wide.png"
    path.write_bytes(_encode(".png", 40, 50))
    out = _cli("predict", tiny_fog_model, path, "--max-image-pixels", 1999, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "header says 50x40 = 2,000 pixels, over the limit of 1,999" in out.stderr
    assert _cli("predict", tiny_fog_model, path, env={"EDGECAM_MAX_IMAGE_PIXELS": "2000"}).returncode == 0
    bad = _cli("predict", tiny_fog_model, path, env={"EDGECAM_MAX_IMAGE_PIXELS": "1e400"})
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("Error: EDGECAM_MAX_IMAGE_PIXELS must be a whole number")


# -- decompression bombs: peak memory of every command that reads images ------------------------
BOMB_SIDE = 16000  # 256 MP: 768 MB once decoded to BGR, from a ~250 KB file


@pytest.fixture(scope="module")
def bomb_folders(tmp_path_factory):
    """``bomb/`` holds the bomb and one good image; ``good/`` only the good image."""
    import cv2

    root = tmp_path_factory.mktemp("bombs")
    bomb = png_bomb(BOMB_SIDE, BOMB_SIDE)
    assert len(bomb) < 300_000 and image_header(bomb).pixels == BOMB_SIDE**2
    good = cv2.imread(str(DATA / "tiny_fog_input.png"))
    for name in ("bomb", "good"):
        (root / name).mkdir()
        cv2.imwrite(str(root / name / "b_good.png"), good)
    (root / "bomb" / "a_bomb.png").write_bytes(bomb)
    return root


def _peak_rss_mb(args, cwd, timeout=600):
    """Run ``edgecam ARGS`` in a child of a fresh interpreter; that child's peak RSS (MB), exit code, stderr."""
    wrapper = (
        "import resource, subprocess, sys; "
        "p = subprocess.run([sys.executable, '-m', 'toolkit', *sys.argv[1:]], stderr=subprocess.PIPE, text=True); "
        "sys.stderr.write(p.stderr); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}
    out = subprocess.run([sys.executable, "-c", wrapper, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    kb, code = out.stdout.strip().splitlines()[-1].split()
    return int(kb) / 1024, int(code), out.stderr


COMMANDS = {
    "predict": lambda d, o: ["predict", DATA / "tiny_fog.tflite", *sorted(d.iterdir()), "--out", o],
    "run": lambda d, o: ["run", DATA / "tiny_fog.tflite", "--source", d, "--log", o / "log.jsonl"],
    "validate": lambda d, o: ["validate", DATA / "tiny_fog.keras", DATA / "tiny_fog.tflite", "--images", d,
                              "--out", o, "--no-faithfulness", "--min-pearson", "0", "--min-top1", "0"],
    "explain": lambda d, o: ["explain", DATA / "tiny_fog.keras", d, "-m", "gradcam", "--no-figure", "-o", o],
    "convert": lambda d, o: ["convert", DATA / "tiny_fog.keras", "-o", o / "m.tflite", "--calibration", d,
                             "--no-self-check"],
    "dataset": lambda d, o: ["dataset", "fog", "--images", d, "--out", o / "ds", "--n", "4", "--size", "16",
                             "--quiet"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bomb_is_refused_in_bounded_memory(bomb_folders, tmp_path, command):
    """Peak RSS with the bomb stays within 100 MB of the same command on the good image alone.

    Decoding the bomb would add at least 768 MB (its BGR pixels), so this fails without the
    header check; the measured difference is the one image's cost, not the interpreter's.
    """
    peaks = {}
    for name in ("good", "bomb"):
        out = tmp_path / name
        out.mkdir()
        peaks[name], code, stderr = _peak_rss_mb(COMMANDS[command](bomb_folders / name, out), tmp_path)
        assert code == 0 and "Traceback" not in stderr, stderr
    assert f"{BOMB_SIDE}x{BOMB_SIDE}" in stderr  # the refusal is reported, naming the size
    assert peaks["bomb"] - peaks["good"] < 100, peaks


def _claiming(fmt: str, width: int, height: int) -> bytes:
    """A header of ``fmt`` claiming ``width × height`` pixels, followed by junk (no real pixels)."""
    if fmt == "png":
        return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + b"\0" * 64
    if fmt == "jpeg":  # SOI, APP0 of junk, SOF0 (baseline) or SOF2 (progressive)
        return b"\xff\xd8\xff\xe0\x00\x10" + b"J" * 14 + b"\xff\xc2\x00\x11\x08" + struct.pack(">HH", height, width) + b"\0" * 64
    if fmt == "bmp":
        return b"BM" + b"\0" * 12 + struct.pack("<Iii", 40, width, -height) + b"\0" * 64
    if fmt == "webp":
        w, h = width - 1, height - 1
        canvas = bytes([w & 255, w >> 8 & 255, w >> 16 & 255, h & 255, h >> 8 & 255, h >> 16 & 255])
        return b"RIFF\0\0\0\0WEBPVP8X" + b"\x0a\0\0\0" + b"\0" * 4 + canvas + b"\0" * 64
    if fmt == "tiff":
        entries = struct.pack("<HHII", 256, 4, 1, width) + struct.pack("<HHII", 257, 4, 1, height)
        return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + entries + b"\0" * 64
    return f"P6\n# comment\n{width} {height}\n255\n".encode() + b"\0" * 64


@SOME
@given(st.sampled_from(["png", "jpeg", "bmp", "webp", "tiff", "pnm"]), st.integers(1, 16383), st.integers(1, 16383))
def test_claimed_sizes_are_read_and_policed_from_the_header(tmp_path_factory, fmt, width, height):
    data = _claiming(fmt, width, height)
    header = image_header(data)
    assert (header.format, header.width, header.height) == (fmt, width, height)
    path = tmp_path_factory.mktemp("claim") / "x.img"
    path.write_bytes(data)
    limit = imageio.DEFAULT_MAX_IMAGE_PIXELS
    if width * height > limit:  # refused before decoding (a progressive JPEG is never reduced)
        with pytest.raises(ImageTooLargeError, match=f"{width}x{height}"):
            load_image(path)
    image = read_image(path)  # within the limit the junk after the header rarely decodes; if it does,
    assert image is None or image.shape == (height, width, 3)  # it is exactly the size its header said


def test_refusals_keep_their_reason(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match=r"notes\.png': not an image edgecam reads \(starts with b'not an i'\)"):
        load_image(text)
    sparse = tmp_path / "huge.bin"
    with open(sparse, "wb") as handle:
        handle.truncate(200 << 20)  # sparse: no disk used
    with pytest.raises(ImageTooLargeError, match=r"the file is 200 MiB, more than an image within the pixel limit"):
        load_image(sparse)
