"""``edgecam frames``: frames for labelling, from driving videos or an ``edgecam run`` log.

Every written frame is listed in ``DIR/frames.json`` with its source video, its frame index and
its time in seconds into the video, so a label can always be traced back to the moment it
describes, and ``edgecam train --kfold`` can keep each video's frames in one fold.

* **Sampling.** ``every`` seconds (or ``fps`` frames per second): the first frame at or after
  each multiple of the period is kept. The time of frame ``i`` is ``i / f`` for a video whose
  container states its frame rate ``f`` (the decoder's position when it states none). Frames
  between kept ones are *grabbed* but not decoded to pixels.
* **Near-duplicates** (``dedupe``): each kept frame's 64-bit difference hash (dHash, Krawetz
  2013: grey 9×8 thumbnail, one bit per pair of horizontal neighbours, 1 where the right one is
  brighter) is compared with the last frame *written* from the same video; a Hamming distance
  of at most ``dedupe`` bits (0–64) skips it. A still camera gives 0–5 bits of sensor noise;
  the demo's drive, sampled at 2 fps, 3–19 (median 9) between consecutive frames (numbers in
  docs/labelling.md). dHash sees structure, not brightness: a still view whose fog thickens
  uniformly also counts as a duplicate.
* **Memory** is one decoded frame at a time, whatever the video's length.
* **Re-running** into the same folder adds nothing twice: a frame's file name is its video's
  name, a short id of the video's path and its index, and ``frames.json`` is merged by file name.
* A video that cannot be opened or read is skipped with a one-line reason; the others go on.

numpy + OpenCV only (no TensorFlow).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host._io import NotRegularFileError, atomic_write_bytes, atomic_write_text, ensure_writable_dir, \
    open_regular
from firmware_host.errors import InputError, SourceError
from firmware_host.imageio import max_image_pixels, read_image, scan_images
from firmware_host.telemetry import TelemetryRecord, read_records

__all__ = [
    "FRAMES_JSON",
    "VIDEO_SUFFIXES",
    "FramesOptions",
    "FrameEntry",
    "InputSummary",
    "SkippedInput",
    "FramesResult",
    "VideoGroups",
    "dhash",
    "hamming",
    "collect_inputs",
    "extract_frames",
    "read_frames_index",
    "video_groups",
]

FRAMES_JSON = "frames.json"

#: Suffixes listed as videos when a folder is given (any case). A file named on the command line
#: is read as a video whatever its suffix, except ``.jsonl`` (a run log).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                  ".mts", ".m2ts", ".3gp")

_FORMAT = "edgecam-frames"
_VERSION = 1
#: Sampling period of videos when neither ``every`` nor ``fps`` is given (seconds).
DEFAULT_EVERY = 1.0
# A frame rate outside this range is not believed (broken headers say 0, 90000 or NaN).
_FPS_RANGE = (0.1, 1000.0)

# FFmpeg prints its own complaints about a broken file to stderr (e.g. "moov atom not found")
# before OpenCV reports the failure; edgecam reports one line instead. Read by OpenCV when it
# first opens a video, so a user's own setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


@dataclass(frozen=True)
class FramesOptions:
    """How frames are picked and written.

    Attributes:
        every: seconds between kept frames (``None``: see ``fps``).
        fps: kept frames per second of video (``None``: see ``every``). With neither, videos are
            sampled every :data:`DEFAULT_EVERY` s and a run log's saved frames are all kept.
        dedupe: largest dHash Hamming distance (0–64 bits) to the last written frame of the same
            video that counts as a near-duplicate and is skipped; ``None`` keeps everything.
        size: ``(height, width)`` of the written frames (centre-cropped to that aspect ratio, then
            resized, as ``edgecam train`` fits images), or ``None`` for the original size.
        image_format: ``"jpg"`` or ``"png"``.
        jpeg_quality: 1–100.
    """

    every: Optional[float] = None
    fps: Optional[float] = None
    dedupe: Optional[int] = None
    size: Optional[Tuple[int, int]] = None
    image_format: str = "jpg"
    jpeg_quality: int = 95

    def __post_init__(self):
        if self.every is not None and self.fps is not None:
            raise InputError(f"Give --every or --fps, not both. Got every={self.every}, fps={self.fps}.")
        for name in ("every", "fps"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"--{name} must be a positive number. Got {value}.")
        if self.dedupe is not None and not 0 <= int(self.dedupe) <= 64:
            raise InputError(f"--dedupe is a Hamming distance between 64-bit hashes, 0–64. Got {self.dedupe}.")
        if self.image_format not in ("jpg", "png"):
            raise InputError(f"image_format must be 'jpg' or 'png'. Got {self.image_format!r}.")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise InputError(f"jpeg_quality must be 1–100. Got {self.jpeg_quality}.")

    def period(self, kind: str) -> Optional[float]:
        """Seconds between kept frames of an input of ``kind`` (``None``: keep every frame)."""
        if self.every is not None:
            return float(self.every)
        if self.fps is not None:
            return 1.0 / float(self.fps)
        return DEFAULT_EVERY if kind == "video" else None

    def settings(self) -> dict:
        """The options as stored in ``frames.json``."""
        out = asdict(self)
        out["size"] = None if self.size is None else list(self.size)
        out["hash"] = "dhash64"
        return out


@dataclass(frozen=True)
class FrameEntry:
    """One written frame, as listed in ``frames.json``.

    Attributes:
        file: file name in the output folder.
        video: the source video (or run log) as it was given.
        video_id: 6 hex digits of SHA-1 of the source's resolved path (stable across runs).
        index: frame number in the video (for a run log, the logged frame number).
        time: seconds into the video (for a run log, seconds since its first record), or
            ``None`` when unknown.
        hash: the frame's dHash as 16 hex digits.
    """

    file: str
    video: str
    video_id: str
    index: int
    time: Optional[float]
    hash: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class InputSummary:
    """What one input gave: frames ``read`` (grabbed), ``sampled`` by time, skipped as
    ``duplicates``, ``unreadable`` (a frame that did not decode), and ``written``."""

    video: str
    video_id: str
    kind: str
    fps: Optional[float]
    read: int = 0
    sampled: int = 0
    duplicates: int = 0
    unreadable: int = 0
    written: int = 0


@dataclass(frozen=True)
class SkippedInput:
    """An input that gave no frame, and why (one line)."""

    path: str
    reason: str


@dataclass(frozen=True)
class FramesResult:
    """What :func:`extract_frames` did.

    Attributes:
        out_dir: the output folder.
        index_path: its ``frames.json``.
        inputs: one summary per input read.
        skipped: inputs that could not be read.
        total: frames listed in ``frames.json`` now (this run's and earlier runs').
    """

    out_dir: Path
    index_path: Path
    inputs: Tuple[InputSummary, ...] = field(default_factory=tuple)
    skipped: Tuple[SkippedInput, ...] = field(default_factory=tuple)
    total: int = 0

    @property
    def written(self) -> int:
        return sum(s.written for s in self.inputs)


# -- hashing ------------------------------------------------------------------------------------


def dhash(image: np.ndarray) -> int:
    """64-bit difference hash of an image (Krawetz, "Kind of like that", 2013).

    Input shape: ``(H, W)`` grey or ``(H, W, 3)`` BGR, uint8. The image is reduced to a 9×8 grey
    thumbnail (area averaging, which also averages sensor noise away); bit ``8·r + c`` is 1 when
    pixel ``(r, c + 1)`` is brighter than ``(r, c)``.

    Returns:
        The hash as an int in ``[0, 2**64)``.
    """
    import cv2

    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two hashes."""
    return bin(int(a) ^ int(b)).count("1")


# -- inputs -------------------------------------------------------------------------------------


def _video_id(path: Path) -> str:
    try:
        key = str(path.resolve())
    except (OSError, RuntimeError):
        key = os.path.abspath(path)
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:6]


def collect_inputs(paths: Sequence[Union[str, os.PathLike]]) -> Tuple[List[Tuple[Path, str]], List[SkippedInput]]:
    """Expand the command line's inputs into ``[(path, kind), …]``, kind ``"video"`` or ``"log"``.

    A folder gives its videos (by :data:`VIDEO_SUFFIXES`, recursively, in the image listing's
    order and rules: hidden files and special files are left out); a ``.jsonl`` file is a run
    log; any other file is a video. The same file named twice is read once.

    Returns:
        ``(inputs, skipped)``: missing paths and folders without videos are in ``skipped``.
    """
    found: List[Tuple[Path, str]] = []
    skipped: List[SkippedInput] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            videos = [p for p in scan_images(path).others if p.suffix.lower() in VIDEO_SUFFIXES]
            if not videos:
                skipped.append(SkippedInput(str(path), f"no videos ({', '.join(VIDEO_SUFFIXES)}) in the folder"))
            found.extend((p, "video") for p in videos)
        elif not os.path.lexists(path):
            skipped.append(SkippedInput(str(path), "does not exist"))
        else:
            found.append((path, "log" if path.suffix.lower() == ".jsonl" else "video"))
    seen, unique = set(), []
    for path, kind in found:
        if _video_id(path) not in seen:
            seen.add(_video_id(path))
            unique.append((path, kind))
    return unique, skipped


# -- readers: each yields (index, time, load) and decodes only when load() is called ------------

_Loader = Callable[[], Optional[np.ndarray]]


class _Unreadable(Exception):
    """An input cannot be read at all (reason in the message)."""


@contextlib.contextmanager
def _opencv_log_level(name: str) -> Iterator[None]:
    """OpenCV's own log level set to ``name`` (e.g. ``"LOG_LEVEL_ERROR"``) inside the block."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None or not hasattr(logging, name):
        yield
        return
    previous = logging.getLogLevel()
    logging.setLogLevel(getattr(logging, name))
    try:
        yield
    finally:
        logging.setLogLevel(previous)


class _VideoReader:
    """One video file through OpenCV, frame by frame (``grab`` always, ``retrieve`` on demand)."""

    def __init__(self, path: Path):
        import cv2

        try:
            with open_regular(path):  # a FIFO would block VideoCapture for ever
                pass
        except NotRegularFileError as exc:
            raise _Unreadable(f"{exc.strerror}, not a video file") from None
        except OSError as exc:
            raise _Unreadable(f"cannot be opened ({exc.strerror or exc})") from None
        with _opencv_log_level("LOG_LEVEL_ERROR"):  # its "can't capture by name" warnings: we report once
            cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise _Unreadable("not a video OpenCV can open (unknown container or codec, or a damaged file); "
                              "re-encode it, e.g. ffmpeg -i IN -c:v mjpeg OUT.avi")
        self.cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if math.isfinite(fps) and _FPS_RANGE[0] <= fps <= _FPS_RANGE[1] else None
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if math.isfinite(count) and 0 < count < 2**31 else None
        w, h = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
        if not (math.isfinite(w) and math.isfinite(h)) or w * h > max_image_pixels():
            self.close()
            raise _Unreadable(f"frames of {w:.0f}×{h:.0f} pixels exceed the limit of {max_image_pixels()} "
                              "(raise EDGECAM_MAX_IMAGE_PIXELS if the video is real)")

    def frames(self) -> Iterator[Tuple[int, Optional[float], _Loader]]:
        import cv2

        index = 0
        while self.cap.grab():
            if self.fps:
                time = index / self.fps
            else:
                pos = self.cap.get(cv2.CAP_PROP_POS_MSEC)
                time = pos / 1000.0 if math.isfinite(pos) and pos >= 0 else None
            yield index, time, self._retrieve
            index += 1

    def _retrieve(self) -> Optional[np.ndarray]:
        ok, image = self.cap.retrieve()
        return image if ok else None

    def close(self) -> None:
        self.cap.release()


class _LogReader:
    """The frames an ``edgecam run --log`` saved (``--save-frames``), through the telemetry reader."""

    fps = None

    def __init__(self, path: Path):
        try:
            with open_regular(path):
                pass
        except OSError as exc:
            raise _Unreadable(f"cannot be read as a run log ({exc.strerror or exc})") from None
        self.path = path
        self.frame_count = None

    def frames(self) -> Iterator[Tuple[int, Optional[float], _Loader]]:
        start = None
        try:
            records = read_records(self.path)
            for record in records:
                if not isinstance(record, TelemetryRecord):
                    continue
                file = record.frame_file(self.path.parent)
                if file is None:
                    continue
                stamp = record.timestamp if isinstance(record.timestamp, float) else None
                if stamp is not None and start is None:
                    start = stamp
                time = None if stamp is None else round(stamp - start, 6)
                yield record.frame, time, (lambda f=file: read_image(f))
        except InputError as exc:
            raise _Unreadable(str(exc)) from None

    def close(self) -> None:
        pass


def _open_reader(path: Path, kind: str):
    return _LogReader(path) if kind == "log" else _VideoReader(path)


# -- extraction ---------------------------------------------------------------------------------


def _safe_stem(path: Path) -> str:
    """The input's name reduced to ``[A-Za-z0-9._-]`` (at most 40 characters) for file names."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip(".-") or "video"
    return stem[:40]


def _as_bgr(image) -> Optional[np.ndarray]:
    """A decoded frame as BGR uint8 ``(H, W, 3)``, or ``None`` when it is not a usable image."""
    import cv2

    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        return None
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[-1] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image if image.ndim == 3 and image.shape[-1] == 3 else None


def _encode(image: np.ndarray, options: FramesOptions) -> bytes:
    import cv2

    from toolkit.datasets.folder import fit_image

    if options.size is not None:
        image = fit_image(image, *options.size)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(options.jpeg_quality)] if options.image_format == "jpg" else []
    ok, data = cv2.imencode(f".{options.image_format}", image, params)
    if not ok:
        raise InputError(f"OpenCV could not encode a {image.shape} frame as {options.image_format}.")
    return data.tobytes()


class _Sampler:
    """Keeps the first frame at or after each multiple of ``period`` seconds, then drops
    near-duplicates of the last kept frame (dHash Hamming distance <= ``dedupe``)."""

    def __init__(self, period: Optional[float], dedupe: Optional[int]):
        self.period = period
        self.dedupe = dedupe
        self.due = 0.0
        self.last_hash: Optional[int] = None

    def on_time(self, time: Optional[float]) -> bool:
        """True when the frame at ``time`` is due (a frame of unknown time always is)."""
        if self.period is None or time is None:
            return True
        if time < self.due - 1e-9 * max(1.0, self.due):
            return False
        # The next due time is the next multiple of the period, so a late frame does not shift the grid.
        self.due = (math.floor(time / self.period + 1e-9) + 1) * self.period
        return True

    def is_duplicate(self, frame_hash: int) -> bool:
        """True when ``frame_hash`` is within ``dedupe`` bits of the last kept frame's (then not kept)."""
        if self.dedupe is not None and self.last_hash is not None and \
                hamming(frame_hash, self.last_hash) <= self.dedupe:
            return True
        self.last_hash = frame_hash
        return False


def _extract_one(path: Path, kind: str, out: Path, options: FramesOptions,
                 progress: bool) -> Tuple[InputSummary, List[FrameEntry], Optional[str]]:
    """Read one input, write its frames; return its summary, entries, and why it stopped early.

    Raises:
        _Unreadable: the input cannot be opened at all.
    """
    from tqdm import tqdm

    reader = _open_reader(path, kind)
    video, vid, stem = str(path), _video_id(path), _safe_stem(path)
    sampler = _Sampler(options.period(kind), options.dedupe)
    counts = dict(read=0, sampled=0, duplicates=0, unreadable=0)
    entries: List[FrameEntry] = []
    stopped = None
    bar = tqdm(total=reader.frame_count, desc=path.name[:32], unit="frame", disable=not progress, file=sys.stderr)
    try:
        for index, time, load in reader.frames():
            counts["read"] += 1
            bar.update(1)
            if not sampler.on_time(time):
                continue
            counts["sampled"] += 1
            image = _as_bgr(load())
            if image is None:
                counts["unreadable"] += 1
                continue
            frame_hash = dhash(image)
            if sampler.is_duplicate(frame_hash):
                counts["duplicates"] += 1
                continue
            name = f"{stem}_{vid}_{index:06d}.{options.image_format}"
            atomic_write_bytes(out / name, _encode(image, options), durable=False)
            entries.append(FrameEntry(name, video, vid, int(index), None if time is None else round(time, 6),
                                      f"{frame_hash:016x}"))
    except _Unreadable as exc:
        stopped = str(exc)
    finally:
        bar.close()
        reader.close()
    summary = InputSummary(video, vid, kind, reader.fps, written=len(entries), **counts)
    return summary, entries, stopped


def _why_empty(summary: InputSummary) -> str:
    if summary.read == 0:
        if summary.kind == "log":
            return "the log names no saved frame (record with edgecam run --log L --save-frames N)"
        return "no frame could be decoded (a damaged or empty video)"
    return f"none of the {summary.sampled} sampled frame(s) could be decoded"


def extract_frames(inputs: Sequence[Union[str, os.PathLike]], out_dir: Union[str, os.PathLike],
                   options: FramesOptions = FramesOptions(), progress: bool = True) -> FramesResult:
    """Extract frames for labelling into ``out_dir`` and list them in ``out_dir/frames.json``.

    Args:
        inputs: video files, folders of videos, or ``edgecam run`` logs (``.jsonl``) whose
            frames were saved (``--save-frames``).
        out_dir: output folder (created). Re-running into it merges: a frame already listed is
            rewritten under the same name, not added twice.
        options: sampling, near-duplicate and output settings.
        progress: a tqdm progress bar per input on stderr.

    Returns:
        A :class:`FramesResult`. Inputs that could not be read are in ``skipped``.

    Raises:
        SourceError: no input could be read at all.
        InputError: ``out_dir/frames.json`` exists but is not a frames index.
        OutputError: ``out_dir`` is not writable.
    """
    out = ensure_writable_dir(out_dir)
    index_path = out / FRAMES_JSON
    index = _index_by_key(read_frames_index(index_path) if index_path.exists() else None)
    found, skipped = collect_inputs(inputs)
    summaries: List[InputSummary] = []
    for path, kind in found:
        try:
            summary, entries, stopped = _extract_one(path, kind, out, options, progress)
        except _Unreadable as exc:
            skipped.append(SkippedInput(str(path), str(exc)))
            continue
        if stopped or not entries:
            skipped.append(SkippedInput(str(path), stopped or _why_empty(summary)))
        if not entries:
            continue
        summaries.append(summary)
        for entry in entries:
            index["frames"][entry.file] = entry.to_dict()
        index["videos"][summary.video_id] = {**asdict(summary), "settings": options.settings()}
        _write_index(index_path, index)  # after each video: a crash loses at most the one in progress
    if not summaries and skipped:
        first = skipped[0]
        raise SourceError(f"'{first.path}': {first.reason}." if len(skipped) == 1 else
                          f"None of the {len(skipped)} inputs gave a frame; first, '{first.path}': {first.reason}.")
    return FramesResult(out, index_path, tuple(summaries), tuple(skipped), len(index["frames"]))


# -- frames.json --------------------------------------------------------------------------------

_MAX_INDEX_BYTES = 512 << 20


def read_frames_index(path: Union[str, os.PathLike]) -> dict:
    """Read and check a ``frames.json`` (``edgecam frames``' or ``edgecam label --export``'s).

    Returns:
        The JSON object; ``"frames"`` is a list of objects each with a string ``"file"``.

    Raises:
        InputError: the file cannot be read, is not JSON, or is not a frames index.
    """
    where = f"Frames index '{path}'"
    try:
        with open_regular(path) as (handle, size):
            if size > _MAX_INDEX_BYTES:
                raise InputError(f"{where} is {size >> 20} MiB; the limit is {_MAX_INDEX_BYTES >> 20} MiB.")
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{where} cannot be read as JSON ({exc}). Move it away, or re-run edgecam frames "
                         "into a new folder.") from None
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, list) or not all(isinstance(f, dict) and isinstance(f.get("file"), str)
                                               for f in frames):
        raise InputError(f"{where} is not an edgecam frames index: expected an object whose \"frames\" is a "
                         "list of objects with a \"file\" string. Move it away, or choose another folder.")
    return data


def _index_by_key(data: Optional[dict]) -> dict:
    """The index as ``{"frames": {file: entry}, "videos": {video_id: summary}}`` for merging."""
    data = data or {}
    videos = data.get("videos") if isinstance(data.get("videos"), list) else []
    return {
        "frames": {f["file"]: f for f in data.get("frames", [])},
        "videos": {v.get("video_id", str(i)): v for i, v in enumerate(videos) if isinstance(v, dict)},
    }


def _write_index(path: Path, index: dict) -> None:
    def order(entry):
        return (str(entry.get("video", "")), str(entry.get("video_id", "")), _number(entry.get("index")),
                entry["file"])

    body = {
        "format": _FORMAT,
        "version": _VERSION,
        "videos": sorted(index["videos"].values(), key=lambda v: str(v.get("video", ""))),
        "frames": sorted(index["frames"].values(), key=order),
    }
    atomic_write_text(path, json.dumps(body, indent=1, allow_nan=False) + "\n")


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -1.0


# -- grouping for training ----------------------------------------------------------------------


@dataclass(frozen=True)
class VideoGroups:
    """The source video of each training image, from a dataset's ``frames.json``.

    Attributes:
        groups: ``(N,)`` object array of group keys (``video_id``, else ``video``; an image with
            no entry is its own group), or ``None`` when the dataset has no ``frames.json``.
        names: group key → the video as given to ``edgecam frames`` (for reports).
        ungrouped: images without an entry.
        note: one line saying how folds are grouped.
        times: ``(N,)`` seconds into the video of each image (NaN when unknown), or ``None``.
    """

    groups: Optional[np.ndarray]
    names: Dict[str, str]
    ungrouped: int
    note: str
    times: Optional[np.ndarray] = field(default=None, repr=False)

    def in_blocks(self, folds: int) -> "VideoGroups":
        """Split each video into contiguous time blocks, ``2 · folds`` blocks in all, when there are
        fewer videos than ``folds`` (one long drive cannot fill five folds by itself).

        Blocks are whole seconds of one video, so only frames at a block's edges can still be
        near-duplicates across folds (blocked cross-validation for time series). Images of unknown
        time keep their video's group. Returns ``self`` when there are enough videos or no times.
        """
        n_videos = len(set(self.names.values()))
        if self.groups is None or self.times is None or n_videos >= folds:
            return self
        spans: Dict[str, Tuple[float, float]] = {}
        for key, t in zip(self.groups.tolist(), self.times.tolist()):
            if key in self.names and math.isfinite(t):
                lo, hi = spans.get(key, (t, t))
                spans[key] = (min(lo, t), max(hi, t))
        total = sum(hi - lo for lo, hi in spans.values())
        if total <= 0:
            return self
        seconds = total / (2 * folds)
        groups, names = [], dict(self.names)
        for key, t in zip(self.groups.tolist(), self.times.tolist()):
            if key in spans and math.isfinite(t):
                block = f"{key}@{int((t - spans[key][0]) // seconds)}"
                names[block] = self.names[key]
                key = block
            groups.append(key)
        note = (f"Only {n_videos} source video(s) for {folds} folds: folds grouped by {seconds:.3g}-second "
                "blocks of video (frames at block edges may still leak; extract frames from more videos).")
        return VideoGroups(np.asarray(groups, dtype=object), names, self.ungrouped, note, self.times)


def video_groups(root: Union[str, os.PathLike], paths: Sequence[Union[str, os.PathLike]]) -> VideoGroups:
    """Group the images ``paths`` of the dataset ``root`` by source video, from ``root/frames.json``.

    An entry's ``file`` is the image's path relative to ``root`` (POSIX), as ``edgecam label
    --export`` writes it; an image listed nowhere by path is looked up by its file name when
    that name is unique in the index.

    Raises:
        InputError: ``frames.json`` exists but is broken.
    """
    root = Path(root)
    index_path = root / FRAMES_JSON
    if not index_path.is_file():
        return VideoGroups(None, {}, len(paths), f"No {FRAMES_JSON} in '{root}': folds are stratified but not "
                           "grouped by video (frames of one video may land in several folds).")
    entries = read_frames_index(index_path)["frames"]
    by_file = {e["file"]: e for e in entries}
    names_seen: Dict[str, list] = {}
    for e in entries:
        names_seen.setdefault(Path(e["file"]).name, []).append(e)
    groups, names, ungrouped, times = [], {}, 0, []
    for p in paths:
        path = Path(p)
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = path.as_posix()
        same_name = names_seen.get(path.name, [])
        entry = by_file.get(rel) or (same_name[0] if len(same_name) == 1 else None)
        video = entry.get("video") if entry else None
        key = (entry.get("video_id") or video) if entry else None
        time = entry.get("time") if entry else None
        times.append(float(time) if isinstance(time, (int, float)) and not isinstance(time, bool) else math.nan)
        if not isinstance(key, str) or not key:
            ungrouped += 1
            groups.append(f"image:{rel}")
            continue
        groups.append(key)
        names[key] = video if isinstance(video, str) else key
    n_videos = len(names)
    note = f"Folds grouped by source video ({n_videos} videos, from {index_path})"
    if ungrouped:
        note += f"; {ungrouped} image(s) not in it are each their own group"
    return VideoGroups(np.asarray(groups, dtype=object), names, ungrouped, note + ".",
                       np.asarray(times, dtype=np.float64))
