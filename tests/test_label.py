"""``edgecam label``: the labelling page in a real headless Chromium, labels.csv, resume, export.

The page is driven over the DevTools pipe (tests/_chromium.py): keys are real key events, the
frame shown is checked by its pixels, and labels.csv is read back with the csv module.
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_host.errors import InputError, OutputError
from toolkit.cli import cli
from toolkit.label import LabelServer, export_labels, parse_classes, read_labels
from toolkit.label.server import MAX_BODY_BYTES

from tests._chromium import CHROMIUM, Chromium, Page

CLASSES = ("dense-fog", "moderate-fog", "light-fog", "no-fog")
# Each frame is one flat grey level, so the frame on screen can be told by a pixel.
LEVELS = (10, 50, 90, 130, 170, 210)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")


def _write_png(path: Path, level: int, shape=(48, 64)) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((*shape, 3), level, np.uint8))


@pytest.fixture
def frames(tmp_path) -> Path:
    folder = tmp_path / "frames"
    for i, level in enumerate(LEVELS):
        _write_png(folder / f"f{i}.png", level)
    return folder


def _csv_rows(path: Path):
    """labels.csv read with the csv module alone (not the code under test)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    chromium = Chromium(tmp_path_factory.mktemp("chromium") / "profile")
    yield chromium
    chromium.close()


def _open(browser, url: str) -> Page:
    page = Page(browser)
    page.navigate(url)
    page.wait_for("document.body.dataset.ready === '1'")
    return page


def _settle(page: Page) -> None:
    """Wait until every change the page sent has been answered."""
    page.wait_for("document.body.dataset.pending === '0'")


def _shown(page: Page) -> dict:
    """What the page shows: position, file, label, and the grey level of the frame's pixels."""
    page.wait_for("(() => { const i = document.getElementById('frame');"
                  " return i.complete && i.naturalWidth > 0 && i.src.endsWith('/image/' + document.body.dataset.position); })()")
    level = page.evaluate("(() => { const i = document.getElementById('frame'), c = document.createElement('canvas');"
                          " c.width = i.naturalWidth; c.height = i.naturalHeight; const g = c.getContext('2d');"
                          " g.drawImage(i, 0, 0); return g.getImageData(3, 3, 1, 1).data[0]; })()")
    return {
        "position": int(page.evaluate("document.body.dataset.position")),
        "file": page.evaluate("document.getElementById('file').textContent"),
        "label": page.evaluate("document.getElementById('current').textContent"),
        "counts": page.evaluate("document.getElementById('counts').textContent"),
        "level": level,
    }


# -- the page in Chromium ----------------------------------------------------------------------
@needs_chromium
def test_keys_label_undo_skip_and_resume_after_reload_and_restart(browser, frames):
    with LabelServer(frames, CLASSES) as server:
        page = _open(browser, server.url)
        assert _shown(page)["file"] == "f0.png" and _shown(page)["level"] == LEVELS[0]
        for key in ("1", "3", "s", "2"):  # f0 dense, f1 light, f2 skipped, f3 moderate
            page.press(key)
        page.press("u")  # undoes f3 and goes back to it
        _settle(page)
        rows = _csv_rows(frames / "labels.csv")
        assert [(r["file"], r["label"]) for r in rows] == [("f0.png", "dense-fog"), ("f1.png", "light-fog"),
                                                         ("f2.png", "skipped")]
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["time"]) for r in rows)
        shown = _shown(page)
        assert (shown["position"], shown["file"], shown["label"], shown["level"]) == (3, "f3.png", "unlabelled", LEVELS[3])
        assert "1 dense-fog: 1" in shown["counts"] and "3 light-fog: 1" in shown["counts"]
        assert "2 moderate-fog: 0" in shown["counts"] and "skipped: 1" in shown["counts"]
        assert page.evaluate("document.getElementById('bar').style.width") == "50%"  # 3 of 6

        page.press("ArrowLeft")
        assert _shown(page)["label"] == "skipped" and _shown(page)["level"] == LEVELS[2]
        page.press("ArrowRight")
        page.press("ArrowRight")
        assert _shown(page)["position"] == 4

        page.reload()  # the page forgets its position: it resumes at the first unlabelled frame
        page.wait_for("document.body.dataset.ready === '1'")
        assert _shown(page)["position"] == 3
        assert page.errors() == []

    with LabelServer(frames, CLASSES) as server:  # a restarted server: same labels, same place
        page = _open(browser, server.url)
        shown = _shown(page)
        assert (shown["position"], shown["file"], shown["level"]) == (3, "f3.png", LEVELS[3])
        assert "1 dense-fog: 1" in shown["counts"]
        page.press("4")
        _settle(page)
        rows = _csv_rows(frames / "labels.csv")
        assert (rows[3]["file"], rows[3]["label"]) == ("f3.png", "no-fog")
        assert page.errors() == []


@needs_chromium
def test_model_guess_and_heatmap_beside_the_frame(browser, frames, tiny_fog_model):
    from firmware_host import ExplainableModel, imageio

    model = ExplainableModel(tiny_fog_model)
    probs = model.run([imageio.load_image(frames / "f0.png", rgb=True)])["probabilities"][0]
    expected = model.classes[int(np.argmax(probs))]
    with LabelServer(frames, CLASSES, model=tiny_fog_model) as server:
        page = _open(browser, server.url)
        page.wait_for("document.getElementById('heat').complete && document.getElementById('heat').naturalWidth > 0")
        guess = page.evaluate("document.getElementById('guess').textContent")
        assert guess.startswith(f"model: {expected} {100 * probs.max():.0f}%")
        assert f"Enter = {CLASSES.index(expected) + 1}" in guess  # the model's classes are the label classes
        assert page.evaluate("[document.getElementById('heat').naturalWidth, document.getElementById('heat').naturalHeight]") == [64, 48]
        page.press("Enter")  # takes the guess
        _settle(page)
        assert [(r["file"], r["label"]) for r in _csv_rows(frames / "labels.csv")] == [("f0.png", expected)]
        assert page.errors() == []


def test_uncertain_order_serves_least_confident_first(frames, tiny_fog_model):
    from firmware_host import ExplainableModel, imageio

    rng = np.random.default_rng(0)
    import cv2

    for i in range(len(LEVELS)):  # textured frames so the model's confidence differs between them
        cv2.imwrite(str(frames / f"f{i}.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    model = ExplainableModel(tiny_fog_model)
    names = [f"f{i}.png" for i in range(len(LEVELS))]
    top = model.run([imageio.load_image(frames / n, rgb=True) for n in names])["probabilities"].max(axis=1)
    with LabelServer(frames, CLASSES, model=model, order="uncertain") as server:
        assert server.files == [names[i] for i in np.argsort(top, kind="stable")]
        assert server.state()["position"] == 0
    with pytest.raises(InputError, match="--order uncertain .* pass --model"):
        LabelServer(frames, CLASSES, order="uncertain")


# -- labels.csv --------------------------------------------------------------------------------
def test_formula_file_names_are_inert_in_labels_csv_and_read_back(tmp_path):
    folder = tmp_path / "frames"
    names = ["=HYPERLINK(1).png", "+1.png", "@SUM.png", "'quoted.png", "plain.png"]
    for name in names:
        _write_png(folder / name, 100)
    with LabelServer(folder, CLASSES) as server:
        for i in range(len(names)):
            server.set_label(i, CLASSES[i % 4])
    cells = [r["file"] for r in _csv_rows(folder / "labels.csv")]
    assert all(not c.startswith(("=", "+", "-", "@")) for c in cells)
    assert sorted(read_labels(folder / "labels.csv")) == sorted(names)
    with LabelServer(folder, CLASSES) as server:  # restarted: every frame is known as labelled
        assert server.done() == len(names)


def test_labels_outside_the_classes_and_bad_class_names_are_refused(frames):
    (frames / "labels.csv").write_text("file,label,time\nf0.png,haze,2026-01-01T00:00:00Z\n")
    with pytest.raises(InputError, match=r"labels that are not in --classes: haze"):
        LabelServer(frames, CLASSES)
    for bad, message in [("", "at least one"), ("a,A", "more than once"), ("../x", "not a plain folder name"),
                         ("=cmd", "not a plain folder name"), ("skipped", "what the s key records"),
                         (",".join("abcdefghij"), "at most 9")]:
        with pytest.raises(InputError, match=message):
            parse_classes(bad)


def test_undo_restores_the_previous_label_and_one_session_per_folder(frames, tmp_path):
    from toolkit.label import LabelStore

    with LabelStore(frames, CLASSES, ["f0.png", "f1.png"]) as store:
        store.set("f0.png", "dense-fog")
        store.set("f0.png", "no-fog")  # relabelled
        store.set("f1.png", "skipped")
        with pytest.raises(InputError, match="Another edgecam label session"):
            LabelServer(frames, CLASSES)
        assert [store.undo(), store.label("f1.png")] == ["f1.png", None]
        assert [store.undo(), store.label("f0.png")] == ["f0.png", "dense-fog"]
        assert [(r["file"], r["label"]) for r in _csv_rows(frames / "labels.csv")] == [("f0.png", "dense-fog")]
        assert [store.undo(), store.undo()] == ["f0.png", None]  # nothing left to undo
        assert _csv_rows(frames / "labels.csv") == []
        with pytest.raises(InputError, match="not one of the frames"):
            store.set("../secret.png", "no-fog")
    with LabelServer(frames, CLASSES):  # closed: the folder is free again
        pass
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="has no images to label"):
        LabelServer(tmp_path / "empty", CLASSES)


def _free_run(folder: Path, *extra: str):
    """`edgecam label` in a subprocess on a free port; returns (process, base URL, token)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", "label", str(folder), "--bind", "127.0.0.1:0",
                             "-q", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
    page = _request(port, "GET", "/")[1].decode()
    token = json.loads(re.search(r"const BOOT = (\{.*?\});", page).group(1))["token"]
    return proc, port, token


def _request(port: int, method: str, path: str, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def _post(port, token, path, value):
    return _request(port, "POST", path, json.dumps(value),
                    {"Content-Type": "application/json", "X-Edgecam-Token": token})


def test_a_killed_session_loses_nothing_and_ctrl_c_stops_cleanly(frames):
    proc, port, token = _free_run(frames, "--classes", ",".join(CLASSES))
    try:
        for i in range(3):
            assert _post(port, token, "/api/label", {"index": i, "label": CLASSES[i]})[0] == 200
    finally:
        proc.kill()  # no chance to flush anything
        proc.wait()
    assert [(r["file"], r["label"]) for r in _csv_rows(frames / "labels.csv")] == [
        ("f0.png", CLASSES[0]), ("f1.png", CLASSES[1]), ("f2.png", CLASSES[2])]
    assert not [p for p in frames.iterdir() if p.name.startswith(".")]  # no temp file left behind

    proc, port, token = _free_run(frames)  # no --classes: the folder's labels.txt remembers them
    status, state = _request(port, "GET", "/api/state")
    assert status == 200 and json.loads(state)["position"] == 3 and json.loads(state)["classes"] == list(CLASSES)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Stopped: 3 of 6 frame(s) labelled" in out and "Traceback" not in err


# -- hostile requests ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "frames"
    for i in range(3):
        _write_png(folder / f"f{i}.png", 40 * i)
    (folder.parent / "secret.txt").write_text("secret")
    with LabelServer(folder, CLASSES) as server:
        yield server


def _one_line_4xx(status: int, body: bytes) -> bool:
    return 400 <= status < 500 and body.endswith(b"\n") and body.count(b"\n") == 1 and b"Traceback" not in body


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)
FIELDS = st.dictionaries(st.sampled_from(["index", "label", "file", "x"]),
                         st.one_of(JSON_VALUES, st.sampled_from([*CLASSES, "skipped", "../f0.png", 0, 2, 3, -1])),
                         max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=FIELDS)
def test_label_request_fields_are_checked(hostile_server, fields):
    status, body = _post(hostile_server.port, hostile_server.token, "/api/label", fields)
    index, label = fields.get("index"), fields.get("label")
    valid = (type(index) is int and 0 <= index < 3 and isinstance(label, str) and label in (*CLASSES, "skipped"))
    if valid:
        assert status == 200 and json.loads(body)["label"] == label
    else:
        assert _one_line_4xx(status, body), (status, body)
    rows = read_labels(hostile_server.folder / "labels.csv")
    assert set(rows) <= {"f0.png", "f1.png", "f2.png"} and {r.label for r in rows.values()} <= {*CLASSES, "skipped"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_label_request_bodies_of_any_bytes_are_4xx_or_valid(hostile_server, raw):
    status, body = _request(hostile_server.port, "POST", "/api/label", raw,
                            {"Content-Type": "application/json", "X-Edgecam-Token": hostile_server.token})
    assert status == 200 or _one_line_4xx(status, body), (status, body)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.one_of(
    st.sampled_from(["/image/../../secret.txt", "/image/..%2f..%2fsecret.txt", "/image/%2e%2e/secret.txt",
                     "/image/-1", "/image/3", "/image/00", "/image/1e3", "/overlay/0", "//etc/passwd",
                     "/image/0/../../secret.txt", "/api/state/../../secret.txt", "/static/../secret.txt"]),
    st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#"), max_size=40).map(lambda s: "/" + s)))
def test_image_requests_never_leave_the_folder(hostile_server, path):
    status, body = _request(hostile_server.port, "GET", path)
    assert b"secret" not in body
    assert status == 200 or _one_line_4xx(status, body), (path, status, body)
    if status == 200:
        route = path.split("?", 1)[0]
        route = "/" + route.lstrip("/") if route.startswith("//") else route  # http.server folds leading //
        assert route in ("/", "/api/state") or re.fullmatch(r"/image/[0-2]", route), path


def test_refusals_name_the_rule(hostile_server):
    port, token = hostile_server.port, hostile_server.token
    good = json.dumps({"index": 0, "label": CLASSES[0]})
    json_headers = {"Content-Type": "application/json"}
    cases = [
        ({**json_headers}, good, 403, b"X-Edgecam-Token"),
        ({**json_headers, "X-Edgecam-Token": token + "x"}, good, 403, b"X-Edgecam-Token"),
        ({"Content-Type": "text/plain", "X-Edgecam-Token": token}, good, 415, b"application/json"),
        ({**json_headers, "X-Edgecam-Token": token, "Sec-Fetch-Site": "cross-site"}, good, 403, b"cross-site"),
        ({**json_headers, "X-Edgecam-Token": token, "Host": "attacker.example"}, good, 421, b"misdirected"),
        ({**json_headers, "X-Edgecam-Token": token}, "x" * (MAX_BODY_BYTES + 1), 413, b"limit"),
        ({**json_headers, "X-Edgecam-Token": token}, "[1]", 400, b"JSON object"),
    ]
    for headers, body, status, words in cases:
        got, text = _request(port, "POST", "/api/label", body, headers)
        assert got == status and words in text and _one_line_4xx(got, text), (headers, got, text)
    # A declared length over the cap is refused before any of it is read.
    got, text = _request(port, "POST", "/api/label", None,
                         {**json_headers, "X-Edgecam-Token": token, "Content-Length": str(10 ** 9)})
    assert got == 413 and _one_line_4xx(got, text)
    assert _request(port, "PUT", "/api/label", good, json_headers) == (501, b"Unsupported method ('PUT')\n")
    assert _one_line_4xx(*_request(port, "GET", "/", headers={"Host": "rebound.example:8090"}))


# -- export --------------------------------------------------------------------------------------
def _label(folder: Path, labels: dict) -> None:
    with LabelServer(folder, CLASSES) as server:
        for file, label in labels.items():
            server.set_label(server.files.index(file), label)


def test_export_writes_the_layout_train_reads_with_provenance(frames, tmp_path):
    from toolkit.datasets.folder import load_folder_dataset

    _write_png(frames / "drive2" / "f0.png", 250)  # same name in a sub-folder
    index = {"format": "edgecam-frames", "version": 1, "videos": [{"video": "a.mp4"}], "frames": [
        {"file": f"f{i}.png", "video": "a.mp4" if i < 3 else "b.mp4", "index": 10 * i, "time": i * 0.5}
        for i in range(6)] + [{"file": "drive2/f0.png", "video": "c.mp4", "index": 0, "time": 0.0}]}
    (frames / "frames.json").write_text(json.dumps(index))
    _label(frames, {"f0.png": "no-fog", "f1.png": "dense-fog", "f2.png": "skipped", "f3.png": "dense-fog",
                    "drive2/f0.png": "no-fog"})
    out = tmp_path / "dataset"
    result = CliRunner().invoke(cli, ["label", str(frames), "--export", str(out)])
    assert result.exit_code == 0, result.output
    assert "Exported 4 image(s)" in result.output and "1 skipped" in result.output

    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == ["dense-fog/f1.png", "dense-fog/f3.png", "no-fog/drive2__f0.png", "no-fog/f0.png"]
    assert os.path.samefile(out / "no-fog" / "f0.png", frames / "f0.png")  # hard links by default
    assert (out / "labels.txt").read_text().split() == list(CLASSES)
    rows = _csv_rows(out / "labels.csv")
    assert {(r["file"], r["label"], r["source"]) for r in rows} == {
        ("dense-fog/f1.png", "dense-fog", "f1.png"), ("dense-fog/f3.png", "dense-fog", "f3.png"),
        ("no-fog/drive2__f0.png", "no-fog", "drive2/f0.png"), ("no-fog/f0.png", "no-fog", "f0.png")}
    carried = json.loads((out / "frames.json").read_text())
    assert carried["format"] == "edgecam-frames" and carried["videos"] == index["videos"]
    assert {f["file"]: (f["video"], f["index"], f["label"]) for f in carried["frames"]} == {
        "dense-fog/f1.png": ("a.mp4", 10, "dense-fog"), "dense-fog/f3.png": ("b.mp4", 30, "dense-fog"),
        "no-fog/drive2__f0.png": ("c.mp4", 0, "no-fog"), "no-fog/f0.png": ("a.mp4", 0, "no-fog")}

    data = load_folder_dataset(out, size=(16, 16))  # what edgecam train reads
    assert data.class_names == CLASSES and sorted(np.bincount(data.y, minlength=4).tolist()) == [0, 0, 2, 2]
    from toolkit.frames import video_groups

    groups = video_groups(out, data.paths)
    assert sorted(groups.names.values()) == ["a.mp4", "b.mp4", "c.mp4"] and groups.ungrouped == 0

    # --copy into the same folder: an earlier export is replaced, with copies this time.
    copied = export_labels(frames, out, copy=True)
    assert copied.copied == 4 and copied.linked == 0
    assert not os.path.samefile(out / "no-fog" / "f0.png", frames / "f0.png")
    assert (out / "no-fog" / "f0.png").read_bytes() == (frames / "f0.png").read_bytes()


def test_export_refuses_unsafe_destinations_and_rows(frames, tmp_path, monkeypatch):
    _label(frames, {"f0.png": "no-fog"})
    with pytest.raises(InputError, match="must not contain each other"):
        export_labels(frames, frames / "dataset")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not empty and not an earlier export"):
        export_labels(frames, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    # A labels.csv edited to point outside the folder: that row is not exported.
    (tmp_path / "outside.png").write_bytes((frames / "f1.png").read_bytes())
    with open(frames / "labels.csv", "a", encoding="utf-8") as handle:
        handle.write("../outside.png,dense-fog,2026-01-01T00:00:00Z\n")
    result = export_labels(frames, tmp_path / "ds")
    assert result.missing == ("../outside.png",) and result.counts["no-fog"] == 1
    assert sorted(p.name for p in (tmp_path / "ds").rglob("*.png")) == ["f0.png"]
    # A disk that fills up half-way: one line, no OUT, no stage left behind.
    import errno
    import shutil

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(OutputError, match="No space left on device.*nothing was changed"):
        export_labels(frames, tmp_path / "full", copy=True)
    assert not (tmp_path / "full").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".full")]
    fresh = tmp_path / "fresh"
    _write_png(fresh / "a.png", 1)
    refused = CliRunner().invoke(cli, ["label", str(fresh)])  # no --classes and no earlier session
    assert refused.exit_code == 2 and "Pass --classes" in refused.output


# -- the fog path end to end: drive videos → frames → labelling in Chromium → export → train ------
@needs_chromium
@pytest.mark.slow
def test_drive_videos_to_frames_to_labels_to_grouped_kfold(browser, tmp_path):
    """The issue's acceptance path. Five short drives rendered like the demo's drive.mp4 (grouped
    5-fold needs five videos); a scripted labeller reads the file name on screen and presses the
    key of that frame's true fog class, from the renderer's per-frame truth."""
    pytest.importorskip("keras")
    from toolkit.datasets.drive import render_drive_video
    from toolkit.datasets.fog import CLASS_NAMES

    drives = {}
    for seed in range(5):
        video = render_drive_video(tmp_path / f"drive{seed}.avi", seconds=4.0, fps=5.0, size=(48, 64),
                                   seed=seed, progress=False)
        drives[str(video.path)] = video
    result = CliRunner().invoke(cli, ["frames", *drives, "--out", str(tmp_path / "frames"), "--every", "0.4",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    index = {e["file"]: e for e in json.loads((tmp_path / "frames" / "frames.json").read_text())["frames"]}
    truth = {file: drives[e["video"]].classes[e["index"]] for file, e in index.items()}
    classes = list(CLASS_NAMES)  # the talk's four classes, in the renderer's order

    with LabelServer(tmp_path / "frames", classes) as server:
        page = _open(browser, server.url)
        for _ in range(len(index)):
            file = page.evaluate("document.getElementById('file').textContent")
            page.press(str(classes.index(truth[file]) + 1))
        _settle(page)
        assert page.evaluate("document.getElementById('done').textContent") == "all frames labelled"
        assert page.errors() == []
    labels = {r["file"]: r["label"] for r in _csv_rows(tmp_path / "frames" / "labels.csv")}
    assert labels == truth

    out = tmp_path / "labelled"
    assert CliRunner().invoke(cli, ["label", str(tmp_path / "frames"), "--export", str(out)]).exit_code == 0
    result = CliRunner().invoke(cli, ["train", str(out), "--out", str(tmp_path / "run"), "--epochs", "1",
                                      "--kfold", "5", "--size", "32", "--no-augment", "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    assert "Folds grouped by source video (5 videos" in result.output
    per_video = json.loads((tmp_path / "run" / "training.json").read_text())["per_video"]
    assert {r["video"]: r["images"] for r in per_video} == {
        v: sum(1 for e in index.values() if e["video"] == v) for v in drives}


def test_labelling_needs_no_tensorflow(frames, tmp_path, tiny_fog_model):
    """A labelling laptop has the base install: serving with --model and exporting never import TF."""
    code = (
        "import json, sys\n"
        "for name in ('tensorflow', 'keras', 'tf_keras'):\n"
        "    sys.modules[name] = None\n"
        "from toolkit.label import LabelServer, export_labels\n"
        f"with LabelServer({str(frames)!r}, {list(CLASSES)!r}, model={str(tiny_fog_model)!r}) as server:\n"
        "    server.set_label(0, server.guesses[0].label)\n"
        f"print(json.dumps(export_labels({str(frames)!r}, {str(tmp_path / 'out')!r}).counts))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sum(json.loads(done.stdout.strip().splitlines()[-1]).values()) == 1
