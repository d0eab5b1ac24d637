"""A fast smoke run of the whole demo at tiny sizes: every artefact exists and the numbers agree."""

import json

import cv2
import pytest

pytest.importorskip("tensorflow")


def test_quick_demo_end_to_end(tmp_path):
    from toolkit.demo import QUICK, run_demo

    messages = []
    result = run_demo(tmp_path / "demo", config=QUICK, progress=False, echo=messages.append)
    out = result.out_dir
    assert result.index_html.exists()
    assert [m for m in messages if m.startswith("[")][-1].startswith("[7/7]")

    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["accuracy"] <= 1.0
    # The demo's claims are the numbers its files hold.
    training = json.loads((out / "train" / "training.json").read_text())
    assert summary["accuracy"] == pytest.approx(training["accuracy"])
    for tag in ("float32", "int8", "device_log"):
        claimed = summary["validation"][tag]
        stored = json.loads((out / f"validate_{tag}" / "summary.json").read_text())
        assert claimed["pearson_median"] == pytest.approx(stored["pearson"]["median"])
        assert claimed["top1_agreement"] == pytest.approx(stored["top1_agreement"])
        assert (out / f"validate_{tag}" / "report.html").stat().st_size > 1000
    assert summary["validation"]["float32"]["pearson_median"] >= 0.999

    # The device run: an annotated video with one frame per input frame, and its telemetry.
    frames = summary["run"]["frames"]
    assert frames == QUICK.video_frames
    cap = cv2.VideoCapture(str(out / "drive_explained.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
    cap.release()
    records = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()
               if line.strip() and not line.startswith('{"header"')]  # the run header is not a record
    assert len(records) == frames

    page = result.index_html.read_text()
    for link in ("fog_int8.tflite", "run.jsonl", "validate_int8/report.html", "summary.json"):
        assert link in page
