"""``edgecam train`` on labelled video frames: folds grouped by source video, per-video figures.

The fog path end to end, short of the browser: drive videos written with OpenCV → ``edgecam
frames`` → the class-folder layout ``edgecam label --export`` writes (``OUT/<class>/<file>``
and ``OUT/frames.json`` with ``file`` rewritten and ``label`` added) → ``edgecam train --kfold``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from firmware_host.errors import InputError
from toolkit.cli import cli
from toolkit.datasets.folder import load_folder_dataset
from toolkit.frames import FRAMES_JSON, video_groups
from toolkit.train import stratified_group_folds

CLASSES = ("fog", "clear")
N_VIDEOS = 6
SECONDS = 6
FPS = 8.0

needs_keras = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="training needs [host]")


def grouped_counts(y, groups, folds, k):
    """``(k, classes)`` counts, and the set of folds each group landed in."""
    counts = np.zeros((k, int(np.max(y)) + 1), dtype=int)
    np.add.at(counts, (folds, y), 1)
    where = {}
    for g, f in zip(groups, folds):
        where.setdefault(g, set()).add(int(f))
    return counts, where


# -- the fold assignment ------------------------------------------------------------------------


def random_videos(seed):
    """Videos of 3–40 frames with their own class mix (a Dirichlet draw), like real footage."""
    rng = np.random.default_rng(seed)
    y, groups = [], []
    for v in range(int(rng.integers(10, 30))):
        n = int(rng.integers(3, 40))
        y += rng.choice(4, p=rng.dirichlet(np.full(4, 0.7)), size=n).tolist()
        groups += [f"video{v}"] * n
    return np.asarray(y), np.asarray(groups), rng


@pytest.mark.parametrize("seed", range(12))
def test_no_video_straddles_folds_and_classes_balance_better_than_chance(seed):
    y, groups, rng = random_videos(seed)
    k = 5
    folds = stratified_group_folds(y, groups, k, seed=seed)
    counts, where = grouped_counts(y, groups, folds, k)
    assert all(len(f) == 1 for f in where.values())  # each video in exactly one fold
    assert (counts.sum(axis=1) > 0).all() and set(folds.tolist()) == set(range(k))
    # Class balance: squared deviation of each fold's share of each class from 1/k, against the
    # median of 25 random assignments of whole videos to folds (the independent reference).
    totals = np.bincount(y, minlength=4)

    def spread(fold_of):
        shares = np.stack([np.bincount(y[fold_of == f], minlength=4) / totals for f in range(k)])
        return float(((shares - 1 / k) ** 2).sum())

    _, inverse = np.unique(groups, return_inverse=True)
    chance = [spread(rng.permutation(np.arange(inverse.max() + 1) % k)[inverse]) for _ in range(25)]
    assert spread(folds) < np.median(chance)


def test_equal_videos_split_evenly_and_deterministically():
    # 10 videos of 20 frames, each half class 0 and half class 1: 2 videos per fold, shares exact.
    y = np.tile(np.repeat([0, 1], 10), 10)
    groups = np.repeat([f"v{i}" for i in range(10)], 20)
    folds = stratified_group_folds(y, groups, 5, seed=3)
    counts, where = grouped_counts(y, groups, folds, 5)
    assert (counts == 20).all() and all(len(f) == 1 for f in where.values())
    assert (stratified_group_folds(y, groups, 5, seed=3) == folds).all()


def test_too_few_videos_for_the_folds():
    with pytest.raises(InputError, match=r"Grouped 5-fold needs at least 5 source videos .* has 3\. "
                                         r"Lower --kfold to 3"):
        stratified_group_folds(np.array([0, 1, 0, 1]), ["a", "b", "c", "c"], 5)
    with pytest.raises(InputError, match="one group per sample"):
        stratified_group_folds(np.array([0, 1]), ["a"], 2)


# -- from videos to a labelled dataset ------------------------------------------------------------


def write_drive(path: Path, seed: int, fog_from: float) -> None:
    """A panned road-like texture; from ``fog_from`` seconds on it is washed out to grey (fog)."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (48, 400, 3), dtype=np.uint8), (5, 5), 2)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    for i in range(int(SECONDS * FPS)):
        frame = texture[:, 4 * i:4 * i + 64].astype(np.float32)
        if i / FPS >= fog_from:
            frame = 0.25 * frame + 0.75 * 200  # I = J·t + A(1 − t), t = 0.25
        writer.write(np.ascontiguousarray(frame.astype(np.uint8)))
    writer.release()


def export_like_label(frames_dir: Path, out: Path) -> None:
    """The layout `edgecam label --export` writes (coord contract): a person labelled each frame."""
    index = json.loads((frames_dir / FRAMES_JSON).read_text())
    exported = []
    for entry in index["frames"]:
        fog_from = float(re.search(r"fog(\d+)", entry["video"]).group(1))
        label = "fog" if entry["time"] >= fog_from else "clear"
        (out / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(frames_dir / entry["file"], out / label / entry["file"])
        exported.append({**entry, "file": f"{label}/{entry['file']}", "label": label})
    (out / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    (out / FRAMES_JSON).write_text(json.dumps({**index, "frames": exported}))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("grouped")
    # Fog sets in at 0 s (all fog), 2, 3, 4 s, or never (all clear): classes mixed within videos.
    starts = [0, 2, 3, 4, 99, 99]
    videos = []
    for v, start in enumerate(starts):
        videos.append(root / f"drive{v}_fog{start}.avi")
        write_drive(videos[-1], seed=v, fog_from=start)
    result = CliRunner().invoke(cli, ["frames", *map(str, videos), "--out", str(root / "frames"), "--every",
                                      "0.5", "--quiet"])
    assert result.exit_code == 0, result.output
    export_like_label(root / "frames", root / "dataset")
    return root / "dataset"


def test_video_groups_from_the_exported_frames_json(labelled, tmp_path):
    data = load_folder_dataset(labelled, 32)
    found = video_groups(labelled, data.paths)
    assert found.ungrouped == 0 and len(found.names) == N_VIDEOS
    per_image = {Path(p).name: g for p, g in zip(data.paths, found.groups)}
    index = json.loads((labelled / FRAMES_JSON).read_text())["frames"]
    assert all(per_image[Path(e["file"]).name] == e["video_id"] for e in index)
    assert sorted(found.names.values()) == sorted({e["video"] for e in index})
    # An image that frames.json does not name is its own group, and counted.
    extra = tmp_path / "ds"
    shutil.copytree(labelled, extra)
    shutil.copy(next((extra / "fog").iterdir()), extra / "fog" / "stray.jpg")
    data = load_folder_dataset(extra, 32)
    found = video_groups(extra, data.paths)
    assert found.ungrouped == 1 and "1 image(s) not in it" in found.note
    # No frames.json: no grouping, and a note that says so.
    (extra / FRAMES_JSON).unlink()
    assert video_groups(extra, data.paths).groups is None
    (extra / FRAMES_JSON).write_text("[1, 2")
    with pytest.raises(InputError, match="cannot be read as JSON"):
        video_groups(extra, data.paths)


@needs_keras
def test_train_kfold_groups_folds_by_video_and_reports_per_video(labelled, tmp_path):
    result = CliRunner().invoke(cli, ["train", str(labelled), "--out", str(tmp_path), "--epochs", "1",
                                      "--kfold", "3", "--size", "32", "--no-augment", "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    assert f"Folds grouped by source video ({N_VIDEOS} videos" in result.output
    # The folds the run printed are the grouped folds, recomputed here from frames.json.
    data = load_folder_dataset(labelled, 32)
    groups = video_groups(labelled, data.paths).groups
    folds = stratified_group_folds(data.y, groups, 3, seed=0)
    _, where = grouped_counts(data.y, groups, folds, 3)
    assert all(len(f) == 1 for f in where.values())
    printed = [tuple(map(int, m)) for m in re.findall(r"fold \d/3: train (\d+), held out (\d+) \((\d+) videos\)",
                                                        result.output)]
    assert printed == [(int((folds != k).sum()), int((folds == k).sum()), len({g for g, f in zip(groups, folds)
                                                                               if f == k})) for k in range(3)]
    metrics = json.loads((tmp_path / "training.json").read_text())
    rows = metrics["per_video"]
    frames_per_video = {}
    for entry in json.loads((labelled / FRAMES_JSON).read_text())["frames"]:
        frames_per_video[entry["video"]] = frames_per_video.get(entry["video"], 0) + 1
    assert {r["video"]: r["images"] for r in rows} == frames_per_video  # every frame out of fold once
    assert sum(r["correct"] for r in rows) == np.trace(np.array(metrics["confusion"]))
    assert [r["accuracy"] for r in rows] == sorted(r["accuracy"] for r in rows)
    support = {c["name"]: c for c in metrics["class_support"]}
    assert support["fog"]["images"] == len(list((labelled / "fog").iterdir()))
    assert support["clear"]["videos"] == 5 and support["fog"]["videos"] == 4  # fog never sets in in two
    assert "per video (held-out frames), worst first:" in result.output


@needs_keras
def test_holdout_split_keeps_each_video_on_one_side(labelled, tmp_path):
    from toolkit.train import train

    data = load_folder_dataset(labelled, 32)
    groups = video_groups(labelled, data.paths).groups
    result = train(labelled, tmp_path, epochs=1, size=32, augment=False, progress=False)
    held = {r.video: r.images for r in result.per_video}
    names = video_groups(labelled, data.paths).names
    totals = {names[g]: int((groups == g).sum()) for g in set(groups.tolist())}
    assert held and all(held[v] == totals[v] for v in held)  # held-out videos are held out whole
    assert sum(held.values()) == result.n_test and len(held) < N_VIDEOS


@needs_keras
def test_without_frames_json_folds_are_plain_stratified_with_a_note(labelled, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(labelled, plain)
    (plain / FRAMES_JSON).unlink()
    result = CliRunner().invoke(cli, ["train", str(plain), "--out", str(tmp_path / "o"), "--epochs", "1",
                                      "--kfold", "2", "--size", "32", "--no-augment", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "folds are stratified but not grouped by video" in result.output
    assert "per video" not in result.output
    assert json.loads((tmp_path / "o" / "training.json").read_text())["per_video"] is None


def one_video_dataset(labelled, out):
    """``labelled`` reduced to the frames of its first video (frames.json filtered alike)."""
    shutil.copytree(labelled, out)
    index = json.loads((out / FRAMES_JSON).read_text())
    first = index["frames"][0]["video"]
    keep = [e for e in index["frames"] if e["video"] == first]
    for e in index["frames"]:
        if e["video"] != first:
            (out / e["file"]).unlink()
    (out / FRAMES_JSON).write_text(json.dumps({**index, "frames": keep}))
    return out, keep


def test_one_long_video_is_cut_into_contiguous_time_blocks(labelled, tmp_path):
    data_dir, entries = one_video_dataset(labelled, tmp_path / "one")
    data = load_folder_dataset(data_dir, 32)
    whole = video_groups(data_dir, data.paths)
    assert len(set(whole.groups.tolist())) == 1
    blocks = whole.in_blocks(5)
    assert "Only 1 source video(s) for 5 folds" in blocks.note
    keys = blocks.groups.tolist()
    assert 10 <= len(set(keys)) <= 11  # 2·5 blocks over the span (the last frame may open one more)
    spans = {}
    for key, t in zip(keys, blocks.times.tolist()):
        lo, hi = spans.get(key, (t, t))
        spans[key] = (min(lo, t), max(hi, t))
    ordered = sorted(spans.values())
    assert all(a[1] < b[0] for a, b in zip(ordered, ordered[1:]))  # blocks are disjoint time ranges
    assert set(blocks.names[k] for k in keys) == {entries[0]["video"]}
    assert whole.in_blocks(1) is whole  # enough videos for the folds: unchanged


@needs_keras
def test_train_kfold_on_a_single_video_uses_time_blocks(labelled, tmp_path):
    data_dir, entries = one_video_dataset(labelled, tmp_path / "one")
    result = CliRunner().invoke(cli, ["train", str(data_dir), "--out", str(tmp_path / "run"), "--epochs", "1",
                                      "--kfold", "3", "--size", "32", "--no-augment", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Only 1 source video(s) for 3 folds: folds grouped by" in result.output
    rows = json.loads((tmp_path / "run" / "training.json").read_text())["per_video"]
    assert [(r["video"], r["images"]) for r in rows] == [(entries[0]["video"], len(entries))]


@needs_keras
def test_more_folds_than_videos_without_times_is_one_error_line(labelled, tmp_path):
    data_dir = tmp_path / "untimed"
    shutil.copytree(labelled, data_dir)
    index = json.loads((data_dir / FRAMES_JSON).read_text())
    (data_dir / FRAMES_JSON).write_text(json.dumps({**index, "frames": [
        {k: v for k, v in e.items() if k != "time"} for e in index["frames"]]}))
    result = CliRunner().invoke(cli, ["train", str(data_dir), "--out", str(tmp_path), "--kfold", "7",
                                      "--epochs", "1", "--quiet"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines[-1] == (f"Error: Grouped 7-fold needs at least 7 source videos (groups); the data has "
                         f"{N_VIDEOS}. Lower --kfold to {N_VIDEOS}, or extract frames from more videos.")


def test_label_export_carries_the_video_of_every_frame(labelled, tmp_path):
    """The real `edgecam label` store and export (no browser) between `frames` and `train`."""
    label = pytest.importorskip("toolkit.label.store")
    from toolkit.label.export import export_labels

    frames_dir = labelled.parent / "frames"
    index = json.loads((frames_dir / FRAMES_JSON).read_text())["frames"]
    work = tmp_path / "frames"
    shutil.copytree(frames_dir, work)
    store = label.LabelStore(work, CLASSES, [e["file"] for e in index])
    for e in index[::2]:  # every other frame labelled; the rest left out of the export
        store.set(e["file"], "fog" if e["index"] % 4 else "clear")
    export_labels(work, tmp_path / "ds")
    data = load_folder_dataset(tmp_path / "ds", 32)
    found = video_groups(tmp_path / "ds", data.paths)
    assert found.ungrouped == 0 and len(data.paths) == len(index[::2])
    by_file = {e["file"]: e for e in index}
    for path, key, t in zip(data.paths, found.groups.tolist(), found.times.tolist()):
        entry = by_file[Path(path).name]
        assert key == entry["video_id"] and t == entry["time"]
