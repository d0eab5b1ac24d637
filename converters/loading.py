"""Load a Keras model file safely, with errors that say what was found and how to fix it."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Union

from firmware_host.errors import ModelFileError

__all__ = ["load_keras_model", "file_sha256", "require_host", "with_input_size"]

log = logging.getLogger("edgecam.convert")

_UNSAFE_HINTS = ("safe_mode", "lambda", "arbitrary code")


def require_host():
    """Import TensorFlow and Keras, or say which extra to install."""
    from firmware_host.errors import MissingDependencyError

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import keras
    except ImportError as exc:
        raise MissingDependencyError(
            f"This needs TensorFlow and Keras ({exc}). Install the host extra: "
            "pip install 'edgecam[host]'"
        ) from exc
    _quiet(tf)
    return tf, keras


def _quiet(tf) -> None:
    """TF's Python-side chatter (retracing notices, the converter's interpreter deprecation)."""
    import warnings

    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")


def file_sha256(path: Union[str, Path]) -> str:
    """sha256 of a file, or of every file below a directory (sorted relative paths + bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_keras_model(path: Union[str, Path], safe_mode: bool = True):
    """Load a ``.keras``, legacy ``.h5`` or SavedModel directory as a Keras 3 model.

    Args:
        path: the model file or SavedModel directory.
        safe_mode: keep Keras' ``safe_mode`` (refuses Lambda layers that carry Python bytecode).
            Turning it off runs code from the file: only for files you trust.

    Raises:
        ModelFileError: missing file, not a Keras model, or Lambda layers under safe_mode.
    """
    _, keras = require_host()

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"Model '{path}' does not exist. Check the path.")
    if not safe_mode:
        log.warning(
            "safe_mode is off: loading '%s' may run Python code stored in it. Only do this for "
            "files you trust.",
            path,
        )
    if path.is_dir():
        return _load_saved_model_dir(path, safe_mode)
    suffix = path.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelFileError(
            f"'{path}' is not a Keras model file: expected a .keras or .h5 file or a SavedModel "
            f"directory, got suffix {suffix or '(none)'!r}."
        )
    with open(path, "rb") as handle:
        head = handle.read(8)
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"'{path}' is not a readable Keras .keras model (not a zip archive; starts with "
            f"{head!r}). Save the model again with model.save('model.keras')."
        )
    if suffix == ".keras":
        _check_keras_archive(path)
    if path.name.lower().endswith(".weights.h5"):
        raise ModelFileError(
            f"'{path}' is a weights-only file (.weights.h5): it has no architecture to convert. "
            "Save the whole model with model.save('model.keras'), or rebuild the model in Python, "
            "call model.load_weights(...) and pass the model object to converters.convert."
        )
    if suffix in (".h5", ".hdf5") and head != b"\x89HDF\r\n\x1a\n":
        raise ModelFileError(
            f"'{path}' is not a readable Keras .h5 model (no HDF5 signature; starts with "
            f"{head!r}). Save the model again with model.save('model.keras')."
        )
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFileError(
            f"'{path}' is not a readable Keras {suffix} model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}). Save the model again "
            "with model.save('model.keras')."
        ) from exc
    except (ValueError, TypeError, KeyError) as exc:
        text = str(exc)
        if "no model config" in text.lower():
            raise ModelFileError(
                f"'{path}' is an HDF5 file without a model config (weights only?): there is no "
                "architecture to convert. Save the whole model with model.save('model.keras')."
            ) from exc
        if safe_mode and any(h in text.lower() for h in _UNSAFE_HINTS):
            raise ModelFileError(
                f"'{path}' contains a Lambda layer (or other Python code) that Keras refuses to "
                "load in safe_mode. If you trust this file, pass --unsafe (safe_mode=False); "
                "better, replace the Lambda with a registered custom layer."
            ) from exc
        raise ModelFileError(
            f"Keras cannot load '{path}': {text.splitlines()[0] if text else type(exc).__name__}. "
            "If it uses custom layers, register them with keras.saving.register_keras_serializable."
        ) from exc
    if not isinstance(model, keras.Model):
        raise ModelFileError(
            f"'{path}' holds a {type(model).__name__}, not a Keras model. Pass a saved model."
        )
    return model


def _check_keras_archive(path: Path) -> None:
    """A ``.keras`` file is a zip holding ``config.json`` (and usually ``model.weights.h5``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFileError(
            f"'{path}' is not a readable Keras .keras model (corrupt zip: {exc}). Save the model "
            "again with model.save('model.keras')."
        ) from exc
    if "config.json" not in names:
        shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "") if names else "nothing"
        raise ModelFileError(
            f"'{path}' is a zip archive but not a Keras model (no config.json; it holds {shown}). "
            "Pass a file written by model.save('model.keras')."
        )


def _load_saved_model_dir(path: Path, safe_mode: bool):
    """A TF SavedModel directory: Keras 3 only reads its graph, not its layers.

    A SavedModel written by Keras 2 (``keras_metadata.pb``) can be rebuilt layer by layer with
    the ``tf_keras`` package, then handed to Keras 3 through the legacy .h5 format.
    """
    import keras

    if not (path / "saved_model.pb").exists():
        raise ModelFileError(
            f"Directory '{path}' is not a SavedModel (no saved_model.pb). Pass a .keras/.h5 "
            "file or a SavedModel directory."
        )
    if not (path / "keras_metadata.pb").exists():
        raise ModelFileError(
            f"SavedModel '{path}' has no Keras layer metadata (keras_metadata.pb), so its layers "
            "cannot be analysed. Export it from the original Keras code with "
            "model.save('model.keras') and convert that file."
        )
    # tf_keras rebuilds a SavedModel's Lambda layers from marshalled bytecode without any safe
    # mode of its own: under safe_mode, refuse them before tf_keras ever reads the file.
    if safe_mode and re.search(rb'"class_name":\s*"Lambda"', (path / "keras_metadata.pb").read_bytes()):
        raise ModelFileError(
            f"'{path}' is a Keras 2 SavedModel with a Lambda layer (Python code that loading would "
            "run), which edgecam refuses in safe_mode. If you trust this file, pass --unsafe "
            "(safe_mode=False); better, replace the Lambda with a registered custom layer."
        )
    try:
        import tf_keras  # type: ignore
    except ImportError as exc:
        raise ModelFileError(
            f"'{path}' is a Keras 2 SavedModel. Reading its layers needs the tf_keras package: "
            "pip install tf-keras (or re-save it as .keras with the Keras that wrote it)."
        ) from exc
    scope = getattr(getattr(getattr(tf_keras, "src", None), "saving", None), "serialization_lib", None)
    if scope is not None and hasattr(scope, "SafeModeScope"):
        with scope.SafeModeScope(safe_mode):  # a second line: tf_keras' own check, where it has one
            legacy = tf_keras.models.load_model(path, compile=False)
    else:
        legacy = tf_keras.models.load_model(path, compile=False)
    with tempfile.TemporaryDirectory() as tmp:
        h5 = os.path.join(tmp, "model.h5")
        legacy.save(h5)
        return keras.models.load_model(h5, compile=False, safe_mode=safe_mode)


def with_input_size(model, input_size):
    """``model`` itself, or, when it was built for any input size and ``input_size`` is given,
    ``model`` called on a fixed ``(H, W, C)`` input (so every tensor has a static size).

    Args:
        model: a Keras model.
        input_size: ``(H, W)``, an int for square inputs, or ``None``.
    """
    shape = tuple(getattr(model, "inputs", [None])[0].shape) if getattr(model, "inputs", None) else ()
    if input_size is None or len(shape) != 4 or (shape[1] is not None and shape[2] is not None):
        return model
    _, keras = require_host()
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    image = keras.Input((int(h), int(w), shape[3]), name="image")
    return keras.Model(image, model(image), name=f"{model.name}_{h}x{w}")
