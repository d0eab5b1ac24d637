"""``run.toml``: the options of ``edgecam run`` as a TOML table, as shipped in a deploy bundle.

The file holds one table, ``[run]``, whose keys are the long options of ``edgecam run`` with
dashes turned into underscores (``--out-video`` → ``out_video``). :func:`to_click_defaults` maps
them to click parameter names, so ``edgecam run --config run.toml`` hands the table to click as
its ``default_map`` and flags given on the command line still win; :func:`to_run_kwargs` maps
them to ``firmware_host.runner.run`` keyword arguments::

    [run]
    model = "fog.tflite"          # relative to this file's directory
    source = "0"                  # camera index, video file, folder or stream URL
    log = "telemetry.jsonl"       # relative to the working directory (the service's data dir)
    smooth = 0.5

Only ``model`` is resolved against the directory of ``run.toml`` (it ships beside it in the
bundle); every other path is used as written, i.e. relative to the process's working directory,
exactly as on the command line. The keys are documented in ``docs/deploy.md``.

No TensorFlow: ``tomllib`` (Python ≥ 3.11) or ``tomli`` (3.9/3.10).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Union

from .errors import InputError, MissingDependencyError

__all__ = [
    "RUN_KEYS",
    "load_run_config",
    "parse_run_config",
    "dumps_run_config",
    "to_run_kwargs",
    "to_click_defaults",
]

_NUMBER = (int, float)
# TOML key → accepted value types. The keys are `edgecam run`'s long options with dashes turned
# into underscores; --json, --show and the config itself are left out (not for a service).
RUN_KEYS: Dict[str, tuple] = {
    "model": (str,),
    "source": (str, int),
    "out_video": (str,),
    "video_fps": _NUMBER,
    "log": (str,),
    "save_frames": (int,),
    "frame_format": (str,),
    "fsync_every": (int,),
    "log_max_mb": _NUMBER,
    "snapshots": (str,),
    "snapshot_every": _NUMBER,
    "snapshot_max_mb": _NUMBER,
    "preview": (str,),
    "smooth": _NUMBER,
    "hysteresis": (str,),
    "realtime": (bool,),
    "loop": (bool,),
    "reconnect_attempts": (int,),
    "threads": (int,),
    "max_frames": (int,),
}

# Where a TOML key is not the name used downstream.
_RUN_KWARG = {"threads": "num_threads"}  # firmware_host.runner.run(...)
_CLICK_PARAM = {"log": "log_path"}  # toolkit/cli/run.py parameter names


def _toml():
    try:
        import tomllib  # Python ≥ 3.11
    except ImportError:  # pragma: no cover - exercised on 3.9/3.10 devices
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError as exc:
            raise MissingDependencyError(
                "Reading run.toml needs tomli on Python < 3.11. Install it with: pip install tomli"
            ) from exc
    return tomllib


def parse_run_config(text: str, origin: str = "run.toml") -> Dict[str, Any]:
    """Parse and check the ``[run]`` table of a run.toml text.

    Args:
        text: the TOML document.
        origin: name shown in error messages.

    Returns:
        ``{parameter_name: value}`` exactly as written (no path resolution).

    Raises:
        InputError: not TOML, no ``[run]`` table, an unknown key or a value of the wrong type.
    """
    tomllib = _toml()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"'{origin}' is not valid TOML: {exc}. Fix the file (see docs/deploy.md).") from exc
    extra_tables = sorted(set(doc) - {"run"})
    if "run" not in doc or not isinstance(doc["run"], dict) or extra_tables:
        raise InputError(
            f"'{origin}' must hold exactly one table, [run], with edgecam run options. Found "
            f"top-level keys {sorted(doc) or 'none'}. Put the options under a [run] header."
        )
    table = doc["run"]
    for key, value in table.items():
        if key not in RUN_KEYS:
            hint = f" (did you mean {key.replace('-', '_')!r}?)" if key.replace("-", "_") in RUN_KEYS else ""
            raise InputError(
                f"'{origin}': unknown [run] key {key!r}{hint}. Known keys: {', '.join(RUN_KEYS)}."
            )
        types = RUN_KEYS[key]
        # bool is an int subclass in Python; TOML true/false is only valid for the flags.
        if isinstance(value, bool) != (types == (bool,)) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise InputError(
                f"'{origin}': [run] {key} must be of type {names}. Got {value!r} ({type(value).__name__})."
            )
    return dict(table)


def load_run_config(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a run.toml and return ``edgecam run`` keyword arguments.

    ``model`` is made absolute relative to the file's directory; other values are returned as
    written. The result can be used as click's ``default_map`` for ``edgecam run``.

    Raises:
        InputError: the file is missing or invalid (see :func:`parse_run_config`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"Cannot read run config '{path}': {exc.strerror}. Pass an existing run.toml.") from exc
    options = parse_run_config(text, str(path))
    if "model" in options:
        model = Path(options["model"])
        options["model"] = str(model if model.is_absolute() else (path.parent / model).resolve())
    return options


def to_run_kwargs(options: Mapping[str, Any]) -> Dict[str, Any]:
    """run.toml options → keyword arguments of ``firmware_host.runner.run`` (``model``, ``source``
    included: pass them positionally or by name)."""
    return {_RUN_KWARG.get(key, key): value for key, value in options.items()}


def to_click_defaults(options: Mapping[str, Any]) -> Dict[str, Any]:
    """run.toml options → ``edgecam run`` click parameter names, for ``ctx.default_map``."""
    return {_CLICK_PARAM.get(key, key): value for key, value in options.items()}


def _toml_value(key: str, value: Any) -> str:
    if not isinstance(value, (str, int, float)):
        raise InputError(f"run option {key!r} must be a string, number or boolean. Got {value!r}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"run option {key!r} must be finite. Got {value!r}.")
    if isinstance(value, bool):
        return "true" if value else "false"
    # A JSON string literal is a valid TOML basic string (same escapes, \uXXXX for controls).
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def dumps_run_config(options: Mapping[str, Any], header: str = "") -> str:
    """Serialise ``options`` as a run.toml document (checked by :func:`parse_run_config`)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines.append("[run]")
    lines += [f"{key} = {_toml_value(key, value)}" for key, value in options.items()]
    text = "\n".join(lines) + "\n"
    parse_run_config(text, "generated run.toml")
    return text
