"""converters.head's layer table is the one source of the "supported layers" message and of
docs/convert.md's head-layer table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from converters.head import HEAD_LAYERS, analyze_head, head_layers_markdown, supported_layers
from firmware_host.errors import UnsupportedHeadError

DOC = Path(__file__).resolve().parents[1] / "docs" / "convert.md"
START, END = "<!-- head-layers:start", "<!-- head-layers:end -->"


def test_doc_table_is_generated_from_the_table():
    text = DOC.read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, "docs/convert.md lost its head-layers markers"
    block = text.split(START, 1)[1].split("\n", 1)[1].split(END, 1)[0]
    assert block == head_layers_markdown(), (
        "docs/convert.md's head-layer table is out of date; paste the output of\n"
        "  python -c 'from converters.head import head_layers_markdown as m; print(m(), end=\"\")'\n"
        "between the head-layers markers."
    )
    rows = [line for line in block.splitlines()[2:] if line.startswith("|")]
    assert len(rows) == len(HEAD_LAYERS)


def test_each_layer_type_has_one_row():
    types = [t for row in HEAD_LAYERS for t in row.types]
    assert len(types) == len(set(types))
    assert all(row.label and row.step and callable(row.build) for row in HEAD_LAYERS)


@pytest.mark.parametrize("cls", ["MaxPooling2D", "UnitNormalization", "Add", "Conv3D"])
def test_unknown_layer_message_lists_the_table(cls):
    layer = type(cls, (), {"name": "odd"})()  # only its class name and name are looked at
    with pytest.raises(UnsupportedHeadError) as info:
        analyze_head([layer], (4, 4, 3), 3, "softmax")
    message = str(info.value)
    assert re.search(rf"Layer 'odd' \({cls}\) in the head", message)
    assert message.endswith(f"(supported: {supported_layers()}).")
    assert all(row.label in message for row in HEAD_LAYERS)


def test_table_names_real_keras_layers():
    keras = pytest.importorskip("keras")
    for row in HEAD_LAYERS:
        for name in row.types:
            assert isinstance(getattr(keras.layers, name, None), type), name


def test_large_conv_in_the_head_is_refused_with_the_table():
    keras = pytest.importorskip("keras")
    inp = keras.Input((4, 4, 3))
    conv = keras.layers.Conv2D(2, 3, padding="same", name="c3")
    keras.Model(inp, conv(inp))
    with pytest.raises(UnsupportedHeadError, match=r"'c3' \(Conv2D\) .*supported: Dense, 1×1 Conv2D"):
        analyze_head([conv, keras.layers.GlobalAveragePooling2D()], (4, 4, 3), 2, "linear")
