"""Shared test set-up: quiet TensorFlow, the plain oneDNN-free path, a cache of conversions."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def tiny_fog_model() -> Path:
    """The committed tiny 4-class fog model (32×32 RGB, GAP+Dense head)."""
    return DATA / "tiny_fog.tflite"
