"""Fog dataset generator: the scattering physics against the formula, files opened by real tools."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from firmware_host.errors import InputError, OutputError, SourceError
from tests._run_helpers import read_video
from toolkit.datasets import fog


@pytest.fixture(scope="module")
def scene():
    return fog.render_scene(np.random.default_rng(7), (48, 64))


# ----------------------------------------------------------------------------- physics


def test_transmission_is_exp_minus_beta_d_on_a_depth_map(scene):
    _, depth = scene
    beta = 0.0123
    expected = np.vectorize(lambda d: math.exp(-beta * float(d)))(depth)
    np.testing.assert_allclose(fog.transmission(depth, beta), expected, rtol=1e-6, atol=1e-12)


def test_transmission_clear_air_and_infinite_depth():
    depth = np.array([0.0, 5.0, np.inf], dtype=np.float32)
    np.testing.assert_array_equal(fog.transmission(depth, 0.0), [1, 1, 1])
    np.testing.assert_allclose(fog.transmission(depth, 0.1), [1.0, math.exp(-0.5), 0.0])


def test_apply_fog_matches_the_scattering_model_float_and_uint8(scene):
    clear, depth = scene
    beta = fog.beta_from_visibility(120.0)
    airlight = np.array([0.8, 0.82, 0.85])
    # Independent reference: I = J t + A (1 - t), t = exp(-beta d), in float64.
    J = clear.astype(np.float64) / 255.0
    t = np.exp(-beta * depth.astype(np.float64))[..., None]
    reference = J * t + airlight * (1 - t)

    as_float = fog.apply_fog(J.astype(np.float32), depth, beta, airlight)
    np.testing.assert_allclose(as_float, reference, atol=1e-5)
    as_uint8 = fog.apply_fog(clear, depth, beta, airlight)
    assert as_uint8.dtype == np.uint8
    assert np.abs(as_uint8.astype(np.float64) - reference * 255).max() <= 0.5 + 1e-3


def test_apply_fog_limits_and_does_not_modify_its_input(scene):
    clear, depth = scene
    before = clear.copy()
    assert np.array_equal(fog.apply_fog(clear, depth, 0.0, 0.9), clear)  # beta 0: unchanged
    dense = fog.apply_fog(clear, np.full_like(depth, 1e4), 1.0, 0.5)  # t ~ 0: all airlight
    assert np.all(dense == 128)
    assert np.array_equal(clear, before)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(beta=-0.1, airlight=0.8), "must be finite and >= 0"),
        (dict(beta=0.1, airlight=1.5), "airlight must be a scalar or"),
    ],
)
def test_apply_fog_rejects_bad_arguments(scene, kwargs, match):
    clear, depth = scene
    with pytest.raises(InputError, match=match):
        fog.apply_fog(clear, depth, **kwargs)
    with pytest.raises(InputError, match="depth must be"):
        fog.apply_fog(clear, depth[:-1], 0.1, 0.8)


@pytest.mark.parametrize(
    "visibility, expected",
    [
        (5.0, "dense-fog"), (49.999, "dense-fog"), (50.0, "moderate-fog"), (50.001, "moderate-fog"),
        (199.999, "moderate-fog"), (200.0, "light-fog"), (200.001, "light-fog"),
        (999.999, "light-fog"), (1000.0, "no-fog"), (1000.001, "no-fog"), (math.inf, "no-fog"),
        (None, "no-fog"),
    ],
)
def test_visibility_thresholds_map_to_the_talks_classes(visibility, expected):
    assert fog.fog_class(visibility) == expected


def test_beta_visibility_round_trip_and_koschmieder_constant():
    v = np.array([1.0, 49.0, 50.0, 200.0, 1000.0, 31_000.0])
    beta = fog.beta_from_visibility(v)
    np.testing.assert_allclose(beta, 3.912 / v, rtol=1e-4)
    np.testing.assert_allclose(fog.visibility_from_beta(beta), v, rtol=1e-12)
    # At V the contrast is 2 %: exp(-beta V) = 0.02.
    assert math.exp(-fog.beta_from_visibility(200.0) * 200.0) == pytest.approx(0.02)
    assert fog.visibility_from_beta(0.0) == math.inf and fog.beta_from_visibility(math.inf) == 0.0
    with pytest.raises(InputError, match="visibility must be metres > 0"):
        fog.beta_from_visibility(0.0)


@pytest.mark.parametrize("name", fog.CLASS_NAMES)
def test_sampled_visibility_and_samples_belong_to_their_class(name):
    rng = np.random.default_rng(3)
    for _ in range(200):
        assert fog.fog_class(fog.sample_visibility(rng, name)) == name
    item = fog.sample(rng, name, (32, 40))
    assert item.image.shape == (32, 40, 3) and item.image.dtype == np.uint8
    assert item.depth.shape == (32, 40)
    assert fog.fog_class(item.visibility) == item.fog_class == name
    assert item.beta == pytest.approx(fog.beta_from_visibility(item.visibility))


def test_rendered_depth_is_a_road_scene(scene):
    clear, depth = scene
    assert clear.dtype == np.uint8 and clear.shape == (48, 64, 3)
    assert depth.dtype == np.float32 and depth.min() > 0
    assert depth[-1].max() < 15  # the road just in front of the camera
    assert depth[0].min() > 200  # the sky
    # Along the image's centre column the ground gets farther towards the horizon.
    column = depth[24:, 32]
    assert column[-1] < column[0]


def test_horizon_prior():
    photo = np.zeros((60, 40, 3), np.uint8)
    photo[:25] = 220  # bright sky above row 25, dark road below
    assert fog.estimate_horizon(photo) == pytest.approx(25, abs=1)
    depth = fog.horizon_depth_prior((60, 40), 25.0, camera_height=1.5)
    assert np.all(depth[:25] == fog.SKY_DEPTH_M)
    y = 59.5
    assert depth[59, 0] == pytest.approx(40 * 1.5 / (y - 25.0))
    assert np.all(np.diff(depth[27:, 0]) < 0)


# ----------------------------------------------------------------------------- files


def _png_count(folder):
    return len(list(folder.glob("*.png")))


def test_generate_dataset_writes_class_folders_and_manifest(tmp_path):
    out = fog.generate_dataset(tmp_path / "ds", 10, size=(32, 32), seed=1, progress=False)
    assert (out / "labels.txt").read_text().split() == list(fog.CLASS_NAMES)
    assert [_png_count(out / c) for c in fog.CLASS_NAMES] == [3, 3, 2, 2]
    manifest = json.loads((out / "dataset.json").read_text())
    assert len(manifest["images"]) == 10
    for entry in manifest["images"]:
        with Image.open(out / entry["file"]) as img:
            assert img.size == (32, 32) and img.mode == "RGB"
        v = math.inf if entry["visibility_m"] is None else entry["visibility_m"]
        assert fog.fog_class(v) == entry["class"] == entry["file"].split("/")[0]
    # Same seed, same images.
    again = fog.generate_dataset(tmp_path / "ds2", 10, size=(32, 32), seed=1, progress=False)
    first = manifest["images"][0]["file"]
    assert (out / first).read_bytes() == (again / first).read_bytes()
    # Regenerating into the same folder replaces the previous run's images.
    fog.generate_dataset(out, 4, size=(32, 32), seed=2, progress=False)
    assert sum(_png_count(out / c) for c in fog.CLASS_NAMES) == 4


def test_generate_dataset_refuses_foreign_files(tmp_path):
    (tmp_path / "no-fog").mkdir()
    (tmp_path / "no-fog" / "mine.png").write_bytes(b"x")
    with pytest.raises(OutputError, match="already contains files"):
        fog.generate_dataset(tmp_path, 4, size=16, progress=False)


def test_imbalanced_counts():
    assert fog.class_counts(100, imbalance=True) == {
        "dense-fog": 7, "moderate-fog": 13, "light-fog": 25, "no-fog": 55}
    assert sum(fog.class_counts(37, imbalance=True).values()) == 37
    assert min(fog.class_counts(5, imbalance=True).values()) >= 1


def test_generate_from_user_photos_and_load_folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        img, _ = fog.render_scene(np.random.default_rng(i), (60, 80))
        cv2.imwrite(str(photos / f"road{i}.jpg"), img[..., ::-1])
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        out = fog.generate_dataset(tmp_path / "ds", 8, size=(32, 48), images_dir=photos, progress=False)
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["depth_source"] == "horizon prior"
    assert {e["source"] for e in manifest["images"]} == {"road0.jpg", "road1.jpg"}

    (out / "light-fog" / "zz_broken.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        data = fog.load_folder_dataset(out, (24, 24))
    x, y, names = data
    assert x.shape == (8, 24, 24, 3) and x.dtype == np.uint8
    assert names == fog.CLASS_NAMES and data.skipped == 1
    assert np.bincount(y, minlength=4).tolist() == [2, 2, 2, 2]


def test_load_folder_dataset_errors(tmp_path):
    with pytest.raises(SourceError, match="has no class sub-folders"):
        fog.load_folder_dataset(tmp_path, 16)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(SourceError, match="No readable image"):
        fog.load_folder_dataset(tmp_path, 16)
    with pytest.raises(SourceError, match="does not exist"):
        fog.load_folder_dataset(tmp_path / "missing", 16)
    with pytest.raises(SourceError, match="No readable image"):
        fog.generate_dataset(tmp_path / "out", 4, images_dir=tmp_path / "a", progress=False)


# ----------------------------------------------------------------------------- video


def test_fog_schedule_goes_into_dense_fog_and_out():
    v = fog.fog_schedule(41, clear_visibility=5000.0, dense_visibility=15.0)
    assert v[0] == pytest.approx(5000.0) and v[-1] == pytest.approx(5000.0)
    assert v[20] == pytest.approx(15.0)
    assert np.all(np.diff(v[:21]) < 0) and np.all(np.diff(v[20:]) > 0)


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_drive_video_opens_with_the_expected_frames(tmp_path, suffix):
    result = fog.render_drive_video(tmp_path / f"drive{suffix}", frames=30, fps=10, size=(48, 64),
                                    seed=3, progress=False)
    frames = read_video(result.path)
    assert len(frames) == 30 and frames[0].shape == (48, 64, 3)
    truth = json.loads(result.truth_path.read_text())
    assert len(truth["frames"]) == 30 == result.frame_count
    assert [f["class"] for f in truth["frames"]] == list(result.classes)
    assert set(result.classes) == set(fog.CLASS_NAMES)  # clear → dense → clear
    assert result.classes[0] == "no-fog" and result.classes[15] == "dense-fog"
    # Dense fog flattens the picture: far less contrast mid-video than at the start.
    assert frames[15].std() < 0.5 * frames[0].std()
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_drive_video_rejects_unknown_suffix(tmp_path):
    with pytest.raises(OutputError, match="must end with .mp4 or .avi"):
        fog.render_drive_video(tmp_path / "drive.mkv", frames=2, progress=False)


# ----------------------------------------------------------------------------- CLI, imports


def test_cli_dataset_fog(tmp_path):
    from toolkit.cli import cli

    result = CliRunner().invoke(cli, ["dataset", "fog", "--out", str(tmp_path / "d"), "--n", "8",
                                      "--size", "24", "--imbalance", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Wrote 8 images" in result.output
    assert len(json.loads((tmp_path / "d" / "dataset.json").read_text())["images"]) == 8
    (tmp_path / "e" / "no-fog").mkdir(parents=True)
    (tmp_path / "e" / "no-fog" / "x.png").write_bytes(b"x")
    bad = CliRunner().invoke(cli, ["dataset", "fog", "--out", str(tmp_path / "e"), "--n", "4", "--quiet"])
    assert bad.exit_code == 1 and "already contains files" in bad.output


def test_fog_module_never_imports_tensorflow():
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "import toolkit.datasets.fog, toolkit.cli.dataset\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
