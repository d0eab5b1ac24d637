"""Attention rollout (Abnar & Zuidema 2020, §3) for ViT-style Keras models.

The attention of every ``keras.layers.MultiHeadAttention`` block is captured by replaying the
model's graph (``converters.layers.replay_graph``) with ``return_attention_scores=True``: the
model is not rebuilt and its weights are shared. Per layer, heads are averaged, the residual
connection is accounted for by adding the identity and renormalising rows
(``Â = (Ā + I) / rowsum``), and layers are multiplied from the input up:
``R = Â_L · … · Â_1`` (row ``i`` = how much output token ``i`` draws from each input token).

The map is the class token's row over the patch tokens (``token="cls"``), or the mean over
all rows (``token="mean"``, models that pool tokens), reshaped to the patch grid. ``"auto"``
picks ``cls`` when there is exactly one token more than patches. Not class-specific.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from firmware_host.errors import InputError, LayerError

from ._base import Method, Output

TOKENS = ("auto", "cls", "mean")


def attention_paths(model) -> List[str]:
    """Paths of the model's ``MultiHeadAttention`` layers (empty for a CNN)."""
    from converters.layers import walk_layers

    return [path for path, layer, _ in walk_layers(model) if type(layer).__name__ == "MultiHeadAttention"]


def attention_forward(model) -> Callable:
    """``x → [logits, scores_1, …, scores_L]``, scores ``(N, heads, T, T)`` in execution order.

    Raises:
        LayerError: the model has no ``MultiHeadAttention`` layer.
    """
    from converters.layers import replay_graph

    paths = set(attention_paths(model))
    if not paths:
        raise LayerError(
            f"Model {model.name!r} has no keras.layers.MultiHeadAttention layer, so attention "
            "rollout has nothing to roll out. Use a CAM or gradient method for CNNs."
        )

    def forward(x):
        store = []

        def substitute(path, op):
            if path not in paths:
                return None

            def call(*args, **kwargs):
                wanted = bool(kwargs.get("return_attention_scores", False))
                out, scores = op(*args, **dict(kwargs, return_attention_scores=True))
                store.append(scores)
                return (out, scores) if wanted else out

            return call

        logits = replay_graph(model, x, substitute)
        return [logits] + store

    return forward


def rollout(scores: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, T, T)`` rollout of per-layer attention ``(N, heads, T, T)``; every row sums to 1."""
    result = None
    for att in scores:
        att = np.asarray(att, dtype=np.float64)
        if att.ndim != 4 or att.shape[-1] != att.shape[-2]:
            raise LayerError(
                f"Attention rollout needs self-attention scores (N, heads, T, T). Got {att.shape}."
            )
        mixed = att.mean(axis=1) + np.eye(att.shape[-1])
        mixed /= mixed.sum(axis=-1, keepdims=True)
        if result is not None and result.shape[-1] != mixed.shape[-1]:
            raise LayerError(
                f"Attention layers disagree on the token count ({result.shape[-1]} then "
                f"{mixed.shape[-1]}); rollout needs the same tokens throughout."
            )
        result = mixed if result is None else mixed @ result
    if result is None:
        raise LayerError("No attention scores were captured.")
    return result


def _patch_grid(model, tokens: int) -> Optional[Tuple[int, int]]:
    """The patch grid: the last spatial layer with one cell per (patch) token, else a square."""
    from converters.layers import output_shape, walk_layers

    for _, layer, _ in reversed(list(walk_layers(model))):
        shape = output_shape(layer) if type(layer).__name__ != "InputLayer" else None
        if shape and len(shape) == 4 and shape[1] and shape[2] and shape[1] * shape[2] in (tokens, tokens - 1):
            return int(shape[1]), int(shape[2])
    for n in (tokens - 1, tokens):
        side = int(round(np.sqrt(n)))
        if n > 0 and side * side == n:
            return side, side
    return None


def token_map(R: np.ndarray, grid: Tuple[int, int], token: str = "auto") -> np.ndarray:
    """``(N, T, T)`` rollout → ``(N, gh, gw)`` map over the patch tokens."""
    gh, gw = grid
    patches, tokens = gh * gw, R.shape[-1]
    if token == "auto":
        token = "cls" if tokens == patches + 1 else "mean"
    if token == "cls":
        if tokens != patches + 1:
            raise InputError(
                f"token='cls' needs one class token before the {patches} patch tokens; the model "
                f"has {tokens} tokens. Use token='mean'."
            )
        return R[:, 0, 1:].reshape(-1, gh, gw).astype(np.float32)
    if token != "mean":
        raise InputError(f"token must be one of {TOKENS}. Got: {token!r}.")
    return R.mean(axis=1)[:, tokens - patches:].reshape(-1, gh, gw).astype(np.float32)


@dataclass(frozen=True)
class AttentionRollout(Method):
    """Options: ``token`` (``auto``/``cls``/``mean``), ``grid`` (patch grid, found if ``None``)."""

    name = "attention_rollout"
    family = "attention"
    class_specific = False
    token: str = "auto"
    grid: Optional[Tuple[int, int]] = None

    def run(self, session, x, class_index):
        from converters.reference import forward_outputs

        forward = session.derived_forward("attention", attention_forward)
        logits, *scores = forward_outputs(forward, x)
        R = rollout(scores)
        grid = tuple(self.grid) if self.grid else _patch_grid(session.model, R.shape[-1])
        if grid is None:
            raise LayerError(
                f"Cannot find the patch grid for {R.shape[-1]} tokens (no spatial patch layer, not "
                "a square). Pass grid=(rows, cols)."
            )
        raw = token_map(R, grid, self.token)
        chosen = np.where(class_index < 0, logits.argmax(axis=-1), class_index).astype(np.int32)
        binary = session.split(features=False).binary
        return Output(raw, logits, session.probabilities(logits, binary), chosen)
