"""``run.toml``: the options of ``edgecam run`` as a TOML table, as shipped in a deploy bundle.

The file holds one table, ``[run]``, whose keys are the long options of ``edgecam run`` with
dashes turned into underscores (``--out-video`` → ``out_video``): the field names of
:class:`~firmware_host.options.RunOptions`, which are also the click parameter names and the
keyword arguments of ``firmware_host.runner.run``. So ``edgecam run --config run.toml`` hands
the table to click as its ``default_map`` (flags given on the command line still win), and
``run(options.pop("model"), options.pop("source"), **options)`` runs it from Python::

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
from .options import OPTIONS, SOURCE, spec_by_name

__all__ = [
    "RUN_KEYS",
    "load_run_config",
    "parse_run_config",
    "dumps_run_config",
    "MAX_CONFIG_BYTES",
]

#: A run.toml is a few hundred bytes; anything past this is not one.
MAX_CONFIG_BYTES = 1 << 20

# TOML key → accepted value types: the model, the source and every RunOptions field a service
# may set (not --show), all from firmware_host.options.
RUN_KEYS: Dict[str, tuple] = {
    "model": (str,),
    SOURCE.name: (str, int),
    **{option.name: option.toml_types for option in OPTIONS if option.toml},
}


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
    except ValueError as exc:  # TOMLDecodeError, or an integer past Python's 4300-digit limit
        raise InputError(f"'{origin}' is not valid TOML: {exc}. Fix the file (see docs/deploy.md).") from exc
    except RecursionError:
        raise InputError(
            f"'{origin}' is nested too deeply to be a run.toml (arrays or tables inside each other). "
            "A run.toml holds one [run] table of plain values (see docs/deploy.md)."
        ) from None
    extra_tables = sorted(set(doc) - {"run"})
    if "run" not in doc or not isinstance(doc["run"], dict) or extra_tables:
        raise InputError(
            f"'{origin}' must hold exactly one table, [run], with edgecam run options. Found "
            f"top-level keys {sorted(doc) or 'none'}. Put the options under a [run] header."
        )
    table = doc["run"]
    specs = spec_by_name()
    for key, value in table.items():
        if key not in RUN_KEYS:
            hint = f" (did you mean {key.replace('-', '_')!r}?)" if key.replace("-", "_") in RUN_KEYS else ""
            raise InputError(
                f"'{origin}': unknown [run] key {key[:60]!r}{hint}. Known keys: {', '.join(RUN_KEYS)}."
            )
        types = RUN_KEYS[key]
        # bool is an int subclass in Python; TOML true/false is only valid for the flags.
        if isinstance(value, bool) != (types == (bool,)) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise InputError(
                f"'{origin}': [run] {key} must be of type {names}. Got {shown} ({type(value).__name__})."
            )
        if key in specs:  # the same bounds as on the command line
            specs[key].convert(value, subject=f"'{origin}': [run] {key}")
    return dict(table)


def load_run_config(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a run.toml and return ``edgecam run`` keyword arguments.

    ``model`` is made absolute relative to the file's directory; other values are returned as
    written. The result can be used as click's ``default_map`` for ``edgecam run``.

    Raises:
        InputError: the file is missing or invalid (see :func:`parse_run_config`).
    """
    path = Path(path)
    text = _read_text(path)
    options = parse_run_config(text, str(path))
    if "model" in options:
        model = Path(options["model"])
        options["model"] = str(model if model.is_absolute() else (path.parent / model).resolve())
    return options


def _read_text(path: Path) -> str:
    """The UTF-8 text of a run.toml: a regular file of at most MAX_CONFIG_BYTES."""
    try:
        if not path.is_file():  # a FIFO would block the read for ever
            raise IsADirectoryError(0, "not a regular file")
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise InputError(f"Cannot read run config '{path}': {exc.strerror}. Pass an existing run.toml.") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(
            f"Run config '{path}' is larger than {MAX_CONFIG_BYTES >> 10} KiB; a run.toml is one small "
            "[run] table. Pass the run.toml of the bundle."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"Run config '{path}' is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); TOML "
            "files are UTF-8. Save it as UTF-8."
        ) from None


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
