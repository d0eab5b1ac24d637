"""The wood case: boards and boxes, crops and their labels, tiles and stitching, box metrics.

No TensorFlow here except the CLI smoke of `dataset wood` (which does not import it); the
pipeline with a trained model is tests/test_demo_wood.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host.errors import InputError
from firmware_host.model import Explanation
from firmware_host.tiles import (TiledModel, TileSpec, board_probabilities, cut_tiles, parse_tiles, stitch,
                                 tile_origins)
from toolkit import metrics as M
from toolkit.datasets.boxes import LabelledBox, read_boxes
from toolkit.datasets.crops import box_fraction_inside, crop_label, load_crops, sample_crops, write_crops
from toolkit.datasets.wood import CLASS_NAMES, generate_wood_dataset, render_board, wood_counts


# -- boards -------------------------------------------------------------------------------------
@pytest.mark.parametrize("label", CLASS_NAMES)
def test_board_has_one_small_box_per_defect_inside_the_board(label):
    board = render_board(np.random.default_rng(3), label, 256)
    assert board.image.shape == (256, 256, 3) and board.image.dtype == np.float32
    assert 0.0 <= board.image.min() and board.image.max() <= 1.0
    assert len(board.boxes) == (0 if label == "sound" else 1)
    for x0, y0, x1, y1 in board.boxes:
        assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
        assert (x1 - x0) * (y1 - y0) < 0.05 * 256 * 256  # small against the board


@pytest.mark.parametrize("label", ["knot", "crack", "resin"])
def test_the_defect_is_darker_than_the_wood_around_it(label):
    board = render_board(np.random.default_rng(11), label, 512)
    gray = board.image.mean(axis=2)
    x0, y0, x1, y1 = board.boxes[0]
    inside = gray[y0:y1, x0:x1]
    # The defect's darkest pixels are well below the board's typical wood (latewood included).
    assert np.percentile(inside, 5) < np.percentile(gray, 5) - 0.05


def test_boards_are_reproducible_and_vary_in_colour():
    a = render_board(np.random.default_rng(5), "sound", 128)
    b = render_board(np.random.default_rng(5), "sound", 128)
    assert np.array_equal(a.image, b.image)
    means = np.array([render_board(np.random.default_rng(s), "sound", 128).image.mean(axis=(0, 1))
                      for s in range(12)])
    assert means.std(axis=0).max() > 0.03  # heterogeneous: colour changes from board to board


def test_render_board_refuses_bad_input():
    with pytest.raises(InputError, match="label must be one of"):
        render_board(np.random.default_rng(0), "rot", 128)
    with pytest.raises(InputError, match="at least 64"):
        render_board(np.random.default_rng(0), "sound", 32)


def test_wood_dataset_on_disk(tmp_path):
    out = generate_wood_dataset(tmp_path / "w", 9, size=96, seed=1, progress=False)
    assert wood_counts(9) == {"sound": 3, "knot": 2, "crack": 2, "resin": 2}
    boxes = read_boxes(out / "boxes.json")
    assert len(boxes) == 9
    for rel, entries in boxes.items():
        cls = rel.split("/")[0]
        assert (out / rel).is_file()
        assert [b.label for b in entries] == ([] if cls == "sound" else [cls])
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["classes"] == list(CLASS_NAMES) and manifest["n"] == 9
    assert (out / "labels.txt").read_text().split() == list(CLASS_NAMES)
    # Same seed, same boards: a second run replaces the first.
    again = generate_wood_dataset(tmp_path / "w", 9, size=96, seed=1, progress=False)
    assert read_boxes(again / "boxes.json") == boxes


def test_cli_dataset_wood(tmp_path):
    from toolkit.cli import cli

    res = CliRunner().invoke(cli, ["dataset", "wood", "--out", str(tmp_path / "d"), "--n", "4", "--size", "64",
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    assert "sound 1, knot 1, crack 1, resin 1" in res.output
    assert len(read_boxes(tmp_path / "d" / "boxes.json")) == 4


def test_read_boxes_refuses_malformed_files(tmp_path):
    bad = tmp_path / "boxes.json"
    for text, match in [("[]", "not a boxes.json"), ("{", "cannot be read"),
                        ('{"format": "edgecam-boxes", "images": {"a.png": [{"class": "knot", "box": [3, 0, 1, 2]}]}}',
                         "x0 <= x1"),
                        ('{"format": "edgecam-boxes", "images": {"a.png": [{"box": [0, 0, 1, 1]}]}}', "each box")]:
        bad.write_text(text)
        with pytest.raises(InputError, match=match):
            read_boxes(bad)


# -- crops --------------------------------------------------------------------------------------
def test_box_fraction_inside_hand_cases():
    # A 10×10 box at (20, 20); crop of 25 at origin (y, x).
    box = (20, 20, 30, 30)
    assert box_fraction_inside(box, (0, 0), 25) == pytest.approx(0.25)  # 5×5 of 10×10
    assert box_fraction_inside(box, (20, 20), 25) == 1.0
    assert box_fraction_inside(box, (0, 15), 25) == pytest.approx(0.5)  # rows 20..24, all columns
    assert box_fraction_inside(box, (40, 40), 25) == 0.0
    assert box_fraction_inside((5, 5, 5, 5), (0, 0), 10) == 1.0  # a point


def test_crop_label_rule():
    knot = LabelledBox("knot", (20, 20, 30, 30))
    assert crop_label([knot], (0, 15), 25, "sound") == ("knot", (LabelledBox("knot", (5, 20, 15, 25)),))
    assert crop_label([knot], (0, 0), 25, "sound") is None  # 25 %: ambiguous
    assert crop_label([knot], (40, 40), 25, "sound") == ("sound", ())
    assert crop_label([], (0, 0), 25, "sound") == ("sound", ())
    # Two boxes: the one with the larger share gives the class.
    crack = LabelledBox("crack", (0, 0, 20, 4))
    label, kept = crop_label([knot, crack], (0, 0), 40, "sound")
    assert label == "knot" and {b.label for b in kept} == {"knot", "crack"}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.integers(16, 48), bx=st.integers(0, 90), by=st.integers(0, 90),
       bw=st.integers(1, 30), bh=st.integers(1, 30))
def test_sampled_crops_follow_the_rule(seed, size, bx, by, bw, bh):
    image = np.zeros((120, 120, 3), np.uint8)
    box = LabelledBox("knot", (bx, by, bx + bw, by + bh))
    crops = sample_crops(np.random.default_rng(seed), image, [box], size, 8, "sound")
    assert len(crops) <= 8
    for (oy, ox), label, _ in crops:
        assert 0 <= oy <= 120 - size and 0 <= ox <= 120 - size
        share = box_fraction_inside(box.box, (oy, ox), size)
        assert (label == "knot") == (share >= 0.5)
        assert label == "knot" or share == 0.0
    # Half the crops are placed on the box: with a box that fits, they hold it.
    if bw <= size and bh <= size:
        assert sum(label == "knot" for _, label, _ in crops) >= 4


def test_load_crops_labels_and_groups(tmp_path):
    data = generate_wood_dataset(tmp_path / "w", 12, size=96, seed=2, progress=False)
    crops = load_crops(data, 48, per_image=4, seed=0)
    x, y, names = crops
    assert x.shape[1:] == (48, 48, 3) and x.dtype == np.uint8 and names == CLASS_NAMES
    boxes = read_boxes(data / "boxes.json")
    for i in range(len(y)):
        oy, ox = crops.origins[i]
        assert np.array_equal(x[i], _read(data / crops.groups[i])[oy:oy + 48, ox:ox + 48])
        expected = crop_label(boxes[crops.groups[i]], (oy, ox), 48, "sound")
        assert names[y[i]] == expected[0]
    from toolkit.train import stratified_group_folds

    folds = stratified_group_folds(y, crops.groups, 3, seed=0)
    for board in set(crops.groups):  # train groups crops by board: every board in one fold
        assert len(set(folds[crops.groups == board])) == 1
    out = write_crops(tmp_path / "c", crops)
    written = read_boxes(out / "boxes.json")
    assert len(written) == len(y)
    assert sum(bool(v) for v in written.values()) == int(np.sum(y != 0))


def _read(path):
    from firmware_host.imageio import read_image

    return read_image(path, rgb=True)


# -- tiles --------------------------------------------------------------------------------------
def test_parse_tiles():
    assert parse_tiles("128") == TileSpec(128, 64)
    assert parse_tiles("128:96") == TileSpec(128, 96)
    assert parse_tiles((64, 16)) == TileSpec(64, 16)
    assert parse_tiles(None) is None
    for bad, match in [("12x8", "SIZE or SIZE:STRIDE"), ("128:0", "STRIDE"), ("128:200", "STRIDE"),
                       ("4", "SIZE must be")]:
        with pytest.raises(InputError, match=match):
            parse_tiles(bad)


def test_tile_origins_cover_the_axis():
    assert tile_origins(512, 128, 64) == (0, 64, 128, 192, 256, 320, 384)
    assert tile_origins(300, 128, 128) == (0, 128, 172)  # the last tile ends on the edge
    assert tile_origins(128, 128, 64) == (0,)
    with pytest.raises(InputError, match="smaller than the 128-px tiles"):
        tile_origins(100, 128, 64)


def test_stitch_averages_overlaps_hand_case():
    # Two 4-px tiles with 2×2 maps (2-px cells) on a 4×6 image, overlapping in columns 2..3.
    a = np.full((2, 2), 1.0)
    b = np.full((2, 2), 3.0)
    out = stitch([a, b], [(0, 0), (0, 2)], 4, (4, 6))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, [[1, 2, 3], [1, 2, 3]])


def _stitch_reference(maps, origins, tile, shape, cell):
    """Per output cell: mean over its pixels of the mean of the covering tiles' cells (loops)."""
    h, w = shape
    out = np.zeros((h // cell, w // cell))
    for r in range(h // cell):
        for c in range(w // cell):
            values = []
            for py in range(r * cell, (r + 1) * cell):
                for px in range(c * cell, (c + 1) * cell):
                    cover = [m[(py - oy) // cell, (px - ox) // cell] for m, (oy, ox) in zip(maps, origins)
                             if oy <= py < oy + tile and ox <= px < ox + tile]
                    values.append(np.mean(cover))
            out[r, c] = np.mean(values)
    return out


@settings(max_examples=25, deadline=None)
@given(cells=st.integers(2, 4), cell=st.sampled_from([4, 8]), step=st.integers(1, 4),
       rows=st.integers(0, 3), cols=st.integers(0, 3), seed=st.integers(0, 1000))
def test_stitch_matches_an_independent_reference(cells, cell, step, rows, cols, seed):
    step = min(step, cells)
    tile = cells * cell
    shape = (tile + rows * cell, tile + cols * cell)
    rng = np.random.default_rng(seed)
    tiles, origins = cut_tiles(np.zeros(shape), TileSpec(tile, step * cell))
    maps = [rng.random((cells, cells)) for _ in tiles]
    np.testing.assert_allclose(stitch(maps, origins, tile, shape), _stitch_reference(maps, origins, tile, shape, cell),
                               atol=1e-5)
    # Tiles that see one global map give that map back, whatever the overlaps.
    world = rng.random((shape[0] // cell, shape[1] // cell))
    views = [world[oy // cell:oy // cell + cells, ox // cell:ox // cell + cells] for oy, ox in origins]
    np.testing.assert_allclose(stitch(views, origins, tile, shape), world, atol=1e-6)


def test_board_probabilities_rule():
    tiles = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.95, 0.0, 0.05]])
    # Background 0: min 0.2; others: max 0.7 and 0.1; renormalised.
    np.testing.assert_allclose(board_probabilities(tiles, 0), np.array([0.2, 0.7, 0.1]) / 1.0, atol=1e-6)
    np.testing.assert_allclose(board_probabilities(tiles, None), tiles.mean(axis=0), atol=1e-6)


class _FakeModel:
    """A stand-in ExplainableModel: a tile is 'knot' when it holds a bright pixel; its CAM for a
    class is the tile's mean brightness per 4×4 cell (for 'knot') or zeros (other classes)."""

    classes = ("sound", "knot")
    metadata = None

    def __init__(self):
        self.calls = []

    def explain_batch(self, tiles, class_index=None):
        self.calls.append((len(tiles), class_index))
        out = []
        for t in tiles:
            knot = float(t.max() > 200)
            probs = np.array([1 - 0.9 * knot - 0.05, 0.9 * knot + 0.05], np.float32)
            c = int(np.argmax(probs)) if class_index is None else int(class_index)
            cells = t.reshape(t.shape[0] // 4, 4, t.shape[1] // 4, 4).mean(axis=(1, 3)).astype(np.float32)
            cam = cells if c == 1 else np.zeros_like(cells)
            out.append(Explanation(probs, c, int(np.argmax(probs)), self.classes[c], cam, 1.0, classes=self.classes))
        return out


def test_tiled_model_explains_the_board_class_and_stitches():
    board = np.zeros((64, 96), np.uint8)
    board[40:44, 70:74] = 255  # a "knot"
    fake = _FakeModel()
    exp = TiledModel(fake, parse_tiles("32:16")).explain(board)
    assert exp.label == "knot" and exp.class_index == 1
    assert exp.probabilities[1] > exp.probabilities[0]
    # Every tile ends up explaining 'knot': the stitched map is the board's own cell means.
    expected = board.reshape(16, 4, 24, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(exp.cam, expected, atol=1e-4)
    assert M.pointing_game(exp.heatmap(board.shape), [(70, 40, 74, 44)], tolerance=0) == 1.0
    # A board without the knot is sound; nothing is explained twice.
    fake2 = _FakeModel()
    plain = TiledModel(fake2, parse_tiles("32:16")).explain(np.zeros((64, 96), np.uint8))
    assert plain.label == "sound" and len(fake2.calls) == 1


def test_tiled_model_refuses_a_small_frame_and_an_unknown_background():
    with pytest.raises(InputError, match="smaller than the 32-px tiles"):
        TiledModel(_FakeModel(), parse_tiles("32")).explain(np.zeros((20, 40), np.uint8))
    with pytest.raises(InputError, match="not one of the model's classes"):
        TiledModel(_FakeModel(), parse_tiles("32"), background="rot")


# -- pointing game and energy in box --------------------------------------------------------------
def test_pointing_game_hand_cases():
    heat = np.zeros((40, 40))
    heat[10, 30] = 1.0  # peak pixel centre (30.5, 10.5)
    assert M.pointing_game(heat, [(28, 8, 33, 13)], tolerance=0) == 1.0
    # Box 10 px left of the peak: x1 = 20.5 → distance 10.
    assert M.pointing_game(heat, [(0, 0, 20.5, 40)], tolerance=15) == 1.0
    assert M.pointing_game(heat, [(0, 0, 20.5, 40)], tolerance=5) == 0.0
    assert M.pointing_game(heat, [(0, 0, 20.5, 40), (30, 10, 31, 11)], tolerance=0) == 1.0  # any box
    assert M.pointing_game(np.ones((5, 5)), [(0, 0, 5, 5)]) == 0.0  # no peak
    assert math.isnan(M.pointing_game(heat, []))


def test_energy_in_box_hand_cases():
    heat = np.array([[1, 2, 0, 0],
                     [3, 4, 0, 0],
                     [0, 0, 0, 10],
                     [0, 0, 0, 0]], dtype=float)
    # Box over the top-left 2×2: (1+2+3+4)/20.
    assert M.energy_in_box(heat, [(0, 0, 2, 2)]) == pytest.approx(0.5)
    # Overlapping boxes count each pixel once (their union).
    assert M.energy_in_box(heat, [(0, 0, 2, 2), (1, 1, 4, 4)]) == pytest.approx(20 / 20)
    assert M.energy_in_box(np.ones((4, 4)), [(0, 0, 2, 2)]) == pytest.approx(4 / 16)  # chance level
    assert M.energy_in_box(np.zeros((4, 4)), [(0, 0, 2, 2)]) == 0.0
    scores = M.box_scores(heat, [(0, 0, 2, 2)])
    assert scores == M.BoxScores(pointing=0.0 if M.POINTING_TOLERANCE_PX < 1 else 1.0, energy=0.5, area=0.25)
    with pytest.raises(InputError, match="non-negative"):
        M.energy_in_box(-heat, [(0, 0, 2, 2)])


def test_scale_boxes_and_mask():
    np.testing.assert_allclose(M.scale_boxes([(10, 20, 30, 40)], (100, 200), (50, 50)), [[2.5, 10, 7.5, 20]])
    mask = M.boxes_mask((4, 4), [(1, 1, 3, 2)])
    assert mask.sum() == 2 and mask[1, 1] and mask[1, 2]


def test_cli_train_crop_trains_on_crops_grouped_by_board(tmp_path):
    pytest.importorskip("tensorflow")
    from toolkit.cli import cli

    data = generate_wood_dataset(tmp_path / "w", 8, size=96, seed=4, progress=False)
    res = CliRunner().invoke(cli, ["train", str(data), "--out", str(tmp_path / "run"), "--crop", "48",
                                   "--crops-per-image", "2", "--epochs", "1", "--batch-size", "8", "--no-augment",
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    assert "held-out (" in res.output and "crops)" in res.output
    training = json.loads((tmp_path / "run" / "training.json").read_text())
    assert training["input_size"] == [48, 48]
    assert training["n_train"] + training["n_test"] == training["n_images"] <= 16
    # The held-out crops come from boards without a crop in training.
    held = {v["video"] for v in training["per_video"]}
    assert held and held <= set(read_boxes(data / "boxes.json"))


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                     max_leaves=20)


@settings(max_examples=60, deadline=None)
@given(images=st.dictionaries(st.text(max_size=12), _json, max_size=4))
def test_read_boxes_takes_hostile_json_with_one_error(tmp_path_factory, images):
    path = tmp_path_factory.mktemp("b") / "boxes.json"
    path.write_text(json.dumps({"format": "edgecam-boxes", "version": 1, "images": images}))
    try:
        boxes = read_boxes(path)
    except InputError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    else:
        for entries in boxes.values():
            for b in entries:
                assert b.box[0] <= b.box[2] and b.box[1] <= b.box[3] and all(math.isfinite(v) for v in b.box)


def test_cli_validate_boxes_go_with_images(tmp_path):
    from toolkit.cli import cli

    for name in ("m.keras", "e.tflite", "run.jsonl", "boxes.json"):
        (tmp_path / name).write_text("x")
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "m.keras"), str(tmp_path / "e.tflite"), "--from-log",
                                   str(tmp_path / "run.jsonl"), "--boxes", str(tmp_path / "boxes.json"),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--boxes goes with --images" in res.output
