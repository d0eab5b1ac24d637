"""``RunOptions``: the one definition of ``edgecam run``'s options.

Each field of :class:`RunOptions` carries its flag, help text, metavar and bounds (an
:class:`OptionSpec`, read with :func:`spec`). Everything else is generated from them:

* the click options of ``edgecam run`` (``toolkit/cli/run.py``);
* the ``[run]`` keys of ``run.toml`` and their checks (:mod:`firmware_host.runconfig`): a key is
  the field name, which is the long flag with dashes turned into underscores;
* the keyword arguments of :func:`firmware_host.runner.run` (``run(model, source, options)``
  or ``run(model, source, smooth=0.5, ...)``);
* the option table of ``docs/run.md`` (:func:`markdown_table`, checked by a test).

Every numeric option has finite bounds, so ``--threads 10^20``, ``--log-max-mb inf`` or
``--hysteresis nan:1`` fail with one line naming the option and its range, from the CLI,
``run.toml`` and Python alike.

No TensorFlow: the standard library only (the parsers of two options live beside their users).
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from .errors import InputError
from .temporal import MAX_HYSTERESIS_FRAMES

__all__ = ["RunOptions", "OptionSpec", "spec", "OPTIONS", "SOURCE", "JSON", "CLI_OPTIONS", "markdown_table"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class OptionSpec:
    """How one option is spelled, documented, bounded and converted.

    Attributes:
        name: field name = ``run.toml`` key = keyword of ``runner.run``.
        flag: the long option (``--out-video``); ``short`` an optional short one.
        kind: ``int``, ``float``, ``bool``, ``str`` (``choices`` may restrict it), ``file``
            or ``dir`` (paths), or ``text`` (a string parsed by ``parse``, e.g. ``0.1:3``).
        help: the help text (CLI, docs table).
        default: the default value (already converted).
        metavar: the value's name in help and messages (``N``, ``ALPHA``).
        low / high: inclusive bounds of a number; ``low_open``/``high_open`` make them strict.
        choices: the allowed strings of a ``str`` option.
        parse: ``text`` options: ``parse(value) -> converted`` (raises InputError).
        doc_default: how the default reads in help and docs when ``str(default)`` would not do.
        toml: whether ``run.toml`` may set it (``--show`` and ``--json`` are not for a service).
    """

    name: str
    flag: str
    kind: str
    help: str
    default: Any = None
    metavar: Optional[str] = None
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    choices: Tuple[str, ...] = ()
    parse: Optional[Callable[[Any], Any]] = None
    doc_default: Optional[str] = None
    toml: bool = True
    short: Optional[str] = None

    @property
    def toml_types(self) -> tuple:
        """Python types a ``run.toml`` value may have."""
        return {"int": (int,), "float": (int, float), "bool": (bool,)}.get(self.kind, (str,))

    @property
    def shown_default(self) -> str:
        if self.doc_default is not None:
            return self.doc_default
        if self.kind == "bool":
            return "off" if not self.default else "on"
        return "–" if self.default is None else f"{self.default:g}" if self.kind == "float" else str(self.default)

    @property
    def described(self) -> str:
        """The help text with the range of a number (CLI help and docs table)."""
        return f"{self.help} Range {self.bounds()}." if self.bounds() else self.help

    def bounds(self) -> str:
        """The range of a number option in interval notation, e.g. ``[1, 256]`` (else ``""``)."""
        if self.kind not in ("int", "float"):
            return ""
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        return f"{lo}{_num(self.low)}, {_num(self.high)}{hi}"

    def rule(self) -> str:
        """What a valid value is, e.g. ``in [1, 256] (an integer)``."""
        if self.kind in ("int", "float"):
            return f"in {self.bounds()} ({'an integer' if self.kind == 'int' else 'a finite number'})"
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        return {"bool": "true or false", "file": "a file path", "dir": "a directory path"}.get(self.kind, "a string")

    def convert(self, value: Any, subject: Optional[str] = None) -> Any:
        """Check and convert one value (a Python value, or a string from the command line).

        Args:
            value: the value; ``None`` keeps an option whose default is ``None`` unset.
            subject: how the option is named in the error (default: flag and metavar).

        Raises:
            InputError: the value is out of range, of the wrong kind or unparsable.
        """
        if value is None and self.default is None:
            return None
        if self.kind == "text":
            try:
                return self.parse(value)  # type: ignore[misc]
            except InputError as exc:  # the parser names the flag; a run.toml names the key too
                raise (InputError(f"{subject}: {exc}") if subject else exc) from None
        subject = subject or " ".join(filter(None, (self.flag, self.metavar)))
        try:
            return _CONVERTERS[self.kind](self, value)
        except (TypeError, ValueError, OverflowError) as exc:
            detail = f" ({exc})" if self.kind in ("file", "dir") and str(exc) else ""
            raise InputError(f"{subject} must be {self.rule()}{detail}. Got: {_show(value)}.") from None


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _to_number(option: OptionSpec, value: Any) -> Union[int, float]:
    if isinstance(value, bool):
        raise TypeError("")
    if isinstance(value, str):
        text = value.strip()
        number: Union[int, float] = int(text) if option.kind == "int" else float(text)
    elif option.kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("")
        number = int(value)
    else:
        number = float(value)
    if not math.isfinite(number):
        raise ValueError("")
    low_ok = number > option.low if option.low_open else number >= option.low
    high_ok = number < option.high if option.high_open else number <= option.high
    if not (low_ok and high_ok):
        raise ValueError("")
    return number


def _to_bool(option: OptionSpec, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("")
    return value


def _to_str(option: OptionSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("")
    if option.choices and value.lower() not in option.choices:
        raise ValueError("")
    return value.lower() if option.choices else value


def _to_path(option: OptionSpec, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value) or "\x00" in os.fspath(value):
        raise TypeError("")
    path = Path(value)
    try:
        mode = path.stat().st_mode
    except OSError:
        return path  # not there yet: the sink creates it
    if option.kind == "dir" and not stat.S_ISDIR(mode):
        raise ValueError("it exists and is not a directory")
    if option.kind == "file" and not stat.S_ISREG(mode):
        raise ValueError("it exists and is not a regular file")
    return path


_CONVERTERS: Dict[str, Callable[[OptionSpec, Any], Any]] = {
    "int": _to_number, "float": _to_number, "bool": _to_bool, "str": _to_str, "file": _to_path, "dir": _to_path,
}


def _parse_hysteresis(value: Any) -> Tuple[float, int]:
    from .temporal import parse_hysteresis

    if isinstance(value, str):
        return parse_hysteresis(value)
    return parse_hysteresis(":".join(str(v) for v in value)) if isinstance(value, (tuple, list)) else parse_hysteresis(str(value))


def _parse_tiles(value: Any):
    from .tiles import parse_tiles

    return parse_tiles(value)


def _parse_preview(value: Any) -> Tuple[str, int]:
    from .preview import parse_bind

    if isinstance(value, (tuple, list)) and len(value) == 2:
        value = f"[{value[0]}]:{value[1]}" if ":" in str(value[0]) else f"{value[0]}:{value[1]}"
    return parse_bind(value)


def _parse_vehicle_id(value: Any) -> str:
    from .telemetry import check_vehicle_id

    return check_vehicle_id(value)


def _opt(flag: str, kind: str, help: str, default: Any = None, **more: Any) -> Any:
    """A :class:`RunOptions` field described by its :class:`OptionSpec` (the name is filled in)."""
    return field(default=default, metadata={"spec": dict(flag=flag, kind=kind, help=help, default=default, **more)})


_BIG = 10**12  # frame counts and intervals: far beyond any run, still finite


@dataclass(frozen=True)
class RunOptions:
    """Options of ``edgecam run`` (see the module docstring; the table is in ``docs/run.md``).

    Construct it with keywords; every value is checked and converted (paths become
    :class:`~pathlib.Path`, ``hysteresis`` a ``(margin, frames)`` tuple, ``preview`` a
    ``(host, port)`` tuple).

    Raises:
        InputError: a value is out of range or of the wrong kind (one line naming the option).

    Example:
        >>> RunOptions(smooth=0.6, hysteresis="0.1:3").hysteresis
        (0.1, 3)
    """

    out_video: Optional[Path] = _opt(
        "--out-video", "file", "Annotated video: .avi (Motion-JPEG, survives power cuts) or .mp4.", metavar="PATH")
    video_fps: Optional[float] = _opt(
        "--video-fps", "float", "Frame rate written into --out-video (default: the source's, else 15).",
        metavar="F", low=0, high=1000, low_open=True, doc_default="source's, else 15")
    log: Optional[Path] = _opt(
        "--log", "file", "JSONL telemetry, one record per frame (input of edgecam validate --from-log).",
        metavar="PATH.jsonl")
    save_frames: int = _opt(
        "--save-frames", "int", "Save every Nth frame beside the log (1 = all, 0 = none) for validation.",
        0, metavar="N", low=0, high=_BIG)
    frame_format: str = _opt(
        "--frame-format", "str", "Format of saved frames (png is lossless).", "jpg", choices=("jpg", "png"),
        metavar="jpg|png")
    fsync_every: int = _opt(
        "--fsync-every", "int", "fsync the log every N records (1: a power cut loses at most the last record).",
        1, metavar="N", low=1, high=_BIG)
    log_max_mb: Optional[float] = _opt(
        "--log-max-mb", "float", "Disk budget of the log and its frames; older segments are rotated out.",
        metavar="MB", low=1, high=1e9, doc_default="unlimited")
    snapshots: Optional[Path] = _opt(
        "--snapshots", "dir",
        "Directory for frame + overlay JPEGs on every class change and every --snapshot-every s.", metavar="DIR")
    snapshot_every: float = _opt(
        "--snapshot-every", "float", "Seconds between periodic snapshots (0: only on class changes).",
        60.0, metavar="S", low=0, high=1e9)
    snapshot_max_mb: float = _opt(
        "--snapshot-max-mb", "float", "Disk budget of --snapshots; the oldest are deleted.",
        100.0, metavar="MB", low=0, high=1e9, low_open=True)
    preview: Optional[Tuple[str, int]] = _opt(
        "--preview", "text", "MJPEG live preview over HTTP; binds 127.0.0.1 unless HOST is given.",
        metavar="[HOST:]PORT", parse=_parse_preview)
    show: bool = _opt("--show", "bool", "Open a window where a display exists (headless by default).", False,
                      toml=False)
    smooth: float = _opt(
        "--smooth", "float", "EMA of probabilities and heatmaps; ALPHA = weight of the past (0: off).",
        0.0, metavar="ALPHA", low=0, high=1, high_open=True)
    hysteresis: Tuple[float, int] = _opt(
        "--hysteresis", "text",
        "Change the shown class only when a new class leads by MARGIN (0 to 1) for FRAMES frames in a row "
        f"(1 to {MAX_HYSTERESIS_FRAMES}).",
        (0.0, 1), metavar="MARGIN[:FRAMES]", parse=_parse_hysteresis, doc_default="0:1")
    realtime: bool = _opt("--realtime", "bool",
                          "Read files at their own frame rate and drop stale frames, like a camera.", False)
    loop: bool = _opt("--loop", "bool", "Restart video files and folders at their end.", False)
    reconnect_attempts: int = _opt(
        "--reconnect-attempts", "int",
        "Reopenings of a lost camera/stream (backoff 0.5 s doubling to 10 s) before giving up.",
        8, metavar="N", low=0, high=1_000_000)
    threads: Optional[int] = _opt("--threads", "int", "Interpreter threads (default: the runtime's).",
                                  metavar="N", low=1, high=256, doc_default="runtime's")
    max_frames: Optional[int] = _opt("--max-frames", "int", "Stop after N frames.", metavar="N", low=1, high=_BIG)
    vehicle_id: Optional[str] = _opt(
        "--vehicle-id", "text",
        "Vehicle id written into the log's header and every record (letters, digits, . _ : -; up to 64).",
        metavar="ID", parse=_parse_vehicle_id)
    tiles: Optional[Any] = _opt(
        "--tiles", "text", "Explain each frame as SIZE-px tiles every STRIDE px (default SIZE/2) and stitch "
        "their maps into one heatmap, overlaps averaged (whole wood boards; docs/wood.md).",
        metavar="SIZE[:STRIDE]", parse=_parse_tiles)

    def __post_init__(self) -> None:
        for option in OPTIONS:
            object.__setattr__(self, option.name, option.convert(getattr(self, option.name)))

    @classmethod
    def build(cls, options: Union["RunOptions", Mapping[str, Any], None] = None,
              overrides: Optional[Mapping[str, Any]] = None) -> "RunOptions":
        """``options`` (or the defaults) with ``overrides`` applied, all checked.

        Args:
            options: a :class:`RunOptions`, a mapping of field names (e.g. a run.toml table
                without ``model``/``source``), or None for the defaults.
            overrides: field names → values applied over ``options``.

        Raises:
            TypeError: an override names no option.
            InputError: a value is out of range.
        """
        if isinstance(options, Mapping):
            options, overrides = None, {**options, **(overrides or {})}
        unknown = sorted(set(overrides or {}) - set(spec_by_name()))
        if unknown:
            raise TypeError(f"Unknown run option(s) {', '.join(unknown)}. Options: {', '.join(spec_by_name())}.")
        base = options if options is not None else cls()
        return replace(base, **dict(overrides or {})) if overrides else base

    def to_dict(self) -> Dict[str, Any]:
        """Field name → value (paths as strings), e.g. for logging the options of a run."""
        return {f.name: (os.fspath(v) if isinstance(v, Path) else v) for f in fields(self) for v in [getattr(self, f.name)]}


OPTIONS: Tuple[OptionSpec, ...] = tuple(
    OptionSpec(name=f.name, **f.metadata["spec"]) for f in fields(RunOptions)
)

#: ``--source``: an input, not an option of the loop (``run(model, source, ...)``), but a
#: ``run.toml`` key and a click option like the others.
SOURCE = OptionSpec(
    "source", "--source", "str", "Camera index (0), /dev/videoN, video file, image folder or glob, "
    "rtsp://…/http://… URL, or GStreamer pipeline (contains '!').", metavar="SOURCE", doc_default="required",
    short="-s",
)
#: ``--json``: how the CLI prints the summary.
JSON = OptionSpec("as_json", "--json", "bool", "Print the summary as one line of JSON.", False, toml=False)

#: The options of ``edgecam run`` in the order of its help.
CLI_OPTIONS: Tuple[OptionSpec, ...] = (SOURCE, *OPTIONS, JSON)


def spec_by_name() -> Dict[str, OptionSpec]:
    return {option.name: option for option in OPTIONS}


def spec(name: str) -> OptionSpec:
    """The :class:`OptionSpec` of ``RunOptions.<name>``."""
    return spec_by_name()[name]


def markdown_table() -> str:
    """``docs/run.md``'s table of ``edgecam run`` options, generated from the specs."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for option in CLI_OPTIONS:
        name = ", ".join(filter(None, (option.flag, option.short)))
        metavar = f" {option.metavar}" if option.metavar and option.kind != "bool" else ""
        cell = f"`{name}{metavar}`".replace("|", "\\|")
        rows.append(f"| {cell} | {option.shown_default} | {option.described} |")
    return "\n".join(rows) + "\n"
