"""Pre-labelling: a converted model's guess and on-device heatmap for every frame (no TensorFlow).

The guess is the model's :class:`~firmware_host.model.Explanation` of the frame — the same
prediction and class activation map the device would produce — so a guess that rests on the
sky rather than the road shows while labelling. ``--order uncertain`` serves the frames the
model is least sure of first (uncertainty sampling, "least confidence": the lowest top-class
probability first).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from firmware_host import imageio
from firmware_host.model import ExplainableModel, Explanation
from firmware_host.sinks import encode_jpeg

__all__ = ["ORDERS", "guess_frames", "overlay_jpeg", "serving_order"]

#: ``--order`` choices: file order, or least confident first (needs ``--model``).
ORDERS = ("file", "uncertain")


def guess_frames(model: ExplainableModel, paths: Sequence[Path], batch_size: int = 16,
                 progress: bool = False) -> List[Optional[Explanation]]:
    """The model's explanation of each frame, None where the file gives no image.

    Args:
        model: the converted model.
        paths: the frames' files.
        batch_size: frames per interpreter call.
        progress: a progress bar on stderr.
    """
    from tqdm import tqdm

    guesses: List[Optional[Explanation]] = [None] * len(paths)
    with tqdm(total=len(paths), unit="frame", desc="pre-label", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = range(start, min(start + batch_size, len(paths)))
            images = {i: imageio.read_image(paths[i], rgb=True) for i in chunk}
            readable = [i for i in chunk if images[i] is not None]
            if readable:
                for i, exp in zip(readable, model.explain_batch([images[i] for i in readable])):
                    guesses[i] = exp
            bar.update(len(chunk))
    return guesses


def serving_order(count: int, order: str, guesses: Optional[Sequence[Optional[Explanation]]] = None) -> List[int]:
    """Frame indices in the order they are served.

    ``"file"`` keeps the folder's order; ``"uncertain"`` puts the lowest top-class probability
    first (ties in file order) and frames without a guess last.
    """
    if order == "file" or guesses is None:
        return list(range(count))
    top = np.array([float(np.max(g.probabilities)) if g is not None else np.inf for g in guesses])
    return [int(i) for i in np.argsort(top, kind="stable")]


def overlay_jpeg(path: Path, guess: Explanation, quality: int = 85) -> bytes:
    """The frame with the guess's heatmap blended over it (:meth:`Explanation.overlay`), as JPEG.

    Raises:
        InputError: the frame cannot be read as an image.
        OutputError: OpenCV cannot encode it.
    """
    rgb = imageio.load_image(path, rgb=True)
    return encode_jpeg(guess.overlay(rgb)[..., ::-1], quality)
