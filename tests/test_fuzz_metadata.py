"""Fuzzing: the metadata reader never fails with anything but edgecam's own errors."""

import json
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_host.errors import EdgecamError
from firmware_host.metadata import EdgecamMetadata, read_tflite_buffers, read_tflite_metadata

MODEL = (Path(__file__).parent / "data" / "tiny_fog.tflite").read_bytes()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data):
    try:
        read_tflite_metadata(data)
    except EdgecamError:
        pass


@FUZZ
@given(st.data())
def test_mutated_real_model(data):
    """Flip bytes, truncate or splice a real model: only edgecam errors, or a valid result."""
    blob = bytearray(MODEL)
    for _ in range(data.draw(st.integers(1, 12))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(8, len(blob)))
    try:
        meta = read_tflite_metadata(bytes(blob[:cut]))
        assert meta.num_classes >= 1
    except EdgecamError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(json_values, st.booleans())
def test_arbitrary_json(value, with_valid_checksum):
    import hashlib

    fields = value if isinstance(value, dict) else {"edgecam": value}
    payload = {"edgecam": fields}
    if with_valid_checksum and isinstance(fields, dict):
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        payload["sha256"] = hashlib.sha256(canonical).hexdigest()
    try:
        EdgecamMetadata.from_buffers({"edgecam": json.dumps(payload).encode()})
    except EdgecamError:
        pass


@FUZZ
@given(st.dictionaries(st.sampled_from(["classes", "preprocessing", "target_layer", "feature_map_shape",
                                        "cam_mode", "cam_output", "class_weights", "format_version"]),
                       json_values, max_size=8))
def test_fields_with_wrong_types(overrides):
    """A valid checksum over wrongly typed fields is still refused cleanly."""
    import hashlib

    good = json.loads(read_tflite_buffers(MODEL)["edgecam"])["edgecam"]
    fields = {**good, **overrides}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    payload = {"edgecam": fields, "sha256": hashlib.sha256(canonical).hexdigest()}
    buffers = dict(read_tflite_buffers(MODEL))
    buffers["edgecam"] = json.dumps(payload).encode()
    try:
        meta = EdgecamMetadata.from_buffers(buffers)
        assert isinstance(meta.classes, tuple)
    except EdgecamError:
        pass


def test_weights_are_read_only():
    meta = read_tflite_metadata(MODEL)
    assert meta.class_weights is not None and not meta.class_weights.flags.writeable
    assert np.isfinite(meta.class_weights).all()
