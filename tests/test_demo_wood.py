"""The wood demo at tiny sizes: every artefact exists, the claims are the files' numbers, and the
pointing game is computed from the device's tiled maps; `predict --tiles` on the demo's model."""

import json
import math
import os

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def wood_demo(tmp_path_factory):
    from toolkit.demo_wood import WOOD_QUICK, run_wood_demo

    messages = []
    result = run_wood_demo(tmp_path_factory.mktemp("wood") / "demo", config=WOOD_QUICK, progress=False,
                           echo=messages.append)
    return result, messages


def test_quick_wood_demo_end_to_end(wood_demo):
    from firmware_host import cam as _cam
    from firmware_host.imageio import list_images, read_image
    from firmware_host.telemetry import read_records
    from toolkit import metrics as M
    from toolkit.datasets.boxes import read_boxes
    from toolkit.demo_wood import WOOD_QUICK

    result, messages = wood_demo
    out = result.out_dir
    assert [m for m in messages if m.startswith("[")][-1].startswith("[7/7]")
    for name in ("index.html", "summary.json", "pointing.json", "run.jsonl", "wood_int8.tflite",
                 "wood_float32.tflite", "data/boxes.json", "boards/boxes.json", "holdout_crops/boxes.json",
                 "train/model.keras", "figures/board_0.png"):
        assert (out / name).is_file(), name

    summary = json.loads((out / "summary.json").read_text())
    training = json.loads((out / "train" / "training.json").read_text())
    assert summary["crop_accuracy"] == pytest.approx(training["accuracy"])
    assert training["input_size"] == [WOOD_QUICK.crop, WOOD_QUICK.crop]  # trained on crops
    for tag in ("float32", "int8"):
        stored = json.loads((out / f"validate_{tag}" / "summary.json").read_text())
        assert summary["validation"][tag]["pearson_median"] == pytest.approx(stored["pearson"]["median"])
        assert stored["boxes"]["images"] > 0  # the held-out crops' boxes were found and scored
    assert summary["validation"]["float32"]["pearson_median"] >= 0.999

    # The device run: one record per board, each map stitched over the whole board.
    records = list(read_records(out / "run.jsonl"))
    assert len(records) == WOOD_QUICK.n_device_boards == summary["run"]["frames"]
    cells = WOOD_QUICK.board // 8  # the small CNN's map is 1/8 of its input; tiles stitch at that scale
    assert all(r.cam.shape == (cells, cells) for r in records)

    # The pointing game, recomputed here from the log and the generator's boxes.
    files = list_images(out / "boards_flat", recursive=False)
    boxes = read_boxes(out / "boards" / "boxes.json")
    hits = []
    for r in records:
        truth = boxes[files[r.frame].name.replace("__", "/", 1)]
        if truth:
            heat = _cam.heatmap(r.cam.astype(np.float32), read_image(files[r.frame]).shape[:2])
            hits.append(M.pointing_game(heat, [b.box for b in truth]))
    boards = summary["boards"]
    assert boards["defect_boards"] == len(hits) > 0
    assert boards["pointing_game_shown"] == pytest.approx(np.mean(hits))
    assert 0.0 <= boards["pointing_game"] <= 1.0  # the true class's maps, recomputed in the demo
    assert 0.0 <= boards["energy_in_box"]["median"] <= 1.0 and not math.isnan(boards["box_area"]["median"])

    page = result.index_html.read_text()
    for link in ("wood_int8.tflite", "run.jsonl", "validate_int8/report.html", "figures/board_0.png", "pointing.json"):
        assert link in page


def test_predict_and_run_with_tiles_on_the_demo_model(wood_demo, tmp_path):
    from firmware_host import ExplainableModel
    from firmware_host.imageio import list_images, read_image
    from firmware_host.runner import run
    from firmware_host.tiles import TiledModel, parse_tiles
    from toolkit.cli import cli
    from toolkit.demo_wood import WOOD_QUICK

    out = wood_demo[0].out_dir
    board = list_images(out / "boards_flat", recursive=False)[0]
    tiles = f"{WOOD_QUICK.crop}:{WOOD_QUICK.tile_stride}"
    res = CliRunner().invoke(cli, ["predict", str(out / "wood_int8.tflite"), str(board), "--tiles", tiles,
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    cells = WOOD_QUICK.board // 8
    assert f"of ({cells}, {cells})" in res.output
    assert (tmp_path / "o" / f"{board.stem}.overlay.png").is_file()
    # The runner with tiles gives the same map as the TiledModel on its own.
    model = ExplainableModel(out / "wood_int8.tflite")
    expected = TiledModel(model, parse_tiles(tiles)).explain(read_image(board, rgb=True))
    seen = []
    run(model, str(board), tiles=tiles, on_frame=seen.append)
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0].explanation.cam, expected.cam, rtol=1e-5, atol=1e-6)
    bad = CliRunner().invoke(cli, ["predict", str(out / "wood_int8.tflite"), str(board), "--tiles", "9x9"])
    assert bad.exit_code != 0 and "SIZE or SIZE:STRIDE" in bad.output


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EDGECAM_TEST_FULL_DEMOS") != "1",
                    reason="the full-size wood demo trains for minutes; set EDGECAM_TEST_FULL_DEMOS=1 to run it")
def test_full_wood_demo_meets_the_acceptance_figures(tmp_path):
    """The default demo (about 4–5 minutes on 2 busy cores): the figures docs/wood.md reports.

    Opt-in, to keep `.ci/run` near 20 minutes; the quick demo above runs every time."""
    from toolkit.demo_wood import WOOD_DEFAULT, run_wood_demo

    summary = run_wood_demo(tmp_path / "demo", config=WOOD_DEFAULT, progress=False, echo=lambda _: None).summary
    assert summary["crop_accuracy"] >= 0.90
    assert summary["validation"]["int8"]["pearson_median"] >= 0.95
    assert summary["boards"]["defect_boards"] > 0 and summary["boards"]["pointing_game"] >= 0.8
