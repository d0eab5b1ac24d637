"""The training recipe of the source talk: a small CNN on folder-per-class images.

* Model: ``Rescaling(1/255)`` → conv blocks → last conv → GlobalAveragePooling → Dropout →
  Dense softmax. The GAP + Dense head is what the converter turns into an exact CAM head (Zhou et
  al. 2016, "Learning Deep Features for Discriminative Localization", Eq. 1–2); the ``Rescaling``
  layer lets it record the preprocessing. ``arch="mobilenetv2"`` swaps in a MobileNetV2 backbone
  (Sandler et al. 2018) with ``weights=None``: nothing is downloaded.
* Augmentation: Keras 3 preprocessing layers equivalent to the talk's
  ``ImageDataGenerator(rescale=1/255, rotation_range=20, horizontal_flip=True, vertical_flip=True,
  zoom_range=0.1, fill_mode='reflect')``, applied in the ``tf.data`` pipeline so the exported
  model stays free of training-only layers.
* Evaluation: a stratified held-out split, or stratified K-fold cross-validation (the talk's answer
  to class imbalance), a per-class report and a confusion matrix figure.

TensorFlow/Keras and matplotlib are imported lazily, inside the functions that need them.

Layouts: images ``(N, H, W, 3)`` RGB uint8 (or float in 0–255); labels ``(N,)`` int class indices.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host._io import atomic_path, atomic_write_bytes, atomic_write_text, ensure_writable_dir
from firmware_host.errors import InputError, OutputError

__all__ = [
    "ARCHITECTURES",
    "ClassReport",
    "TrainResult",
    "build_model",
    "build_augmentation",
    "stratified_split",
    "stratified_folds",
    "stratified_group_folds",
    "ClassSupport",
    "VideoAccuracy",
    "classification_report",
    "confusion_matrix",
    "save_confusion_figure",
    "train",
]

ARCHITECTURES = ("small", "mobilenetv2")

#: The layer the CAM is read from in the default small CNN.
LAST_CONV_NAME = "last_conv"


def _keras():
    from converters.loading import require_host

    return require_host()[1]


def _tf():
    from converters.loading import require_host

    return require_host()[0]


def build_model(
    num_classes: int,
    input_size: Union[int, Tuple[int, int]] = 64,
    arch: str = "small",
    dropout: float = 0.3,
    width: int = 16,
):
    """Build an uncompiled classifier whose head the converter can turn into an exact CAM.

    Input shape: ``(batch, H, W, 3)`` float32 RGB in 0–255 (the model rescales by 1/255 itself).
    Output shape: ``(batch, num_classes)`` softmax probabilities.

    Args:
        num_classes: number of classes (>= 2).
        input_size: ``H`` (square) or ``(H, W)``.
        arch: ``"small"`` (three conv-BN-ReLU-pool blocks of ``width``, 2·``width``,
            4·``width`` filters, then a 3×3 ReLU conv named ``last_conv``) or ``"mobilenetv2"``
            (``keras.applications.MobileNetV2(alpha=0.35, weights=None)``, nested). The small
            CNN's ``last_conv`` has 8·``width`` filters.
        dropout: dropout rate before the Dense layer.
        width: filters of the first block of the small CNN.

    Returns:
        A ``keras.Model`` named ``edgecam_<arch>``.

    Raises:
        InputError: unknown ``arch``, fewer than 2 classes, or an input smaller than 32 px.
    """
    if arch not in ARCHITECTURES:
        raise InputError(f"arch must be one of {', '.join(ARCHITECTURES)}. Got {arch!r}.")
    if int(num_classes) < 2:
        raise InputError(f"A classifier needs at least 2 classes. Got {num_classes}.")
    h, w = (input_size, input_size) if isinstance(input_size, (int, np.integer)) else tuple(input_size)
    if min(h, w) < 32:
        raise InputError(f"input_size must be at least 32 px (three 2× poolings). Got {(h, w)}.")
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((int(h), int(w), 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if arch == "small":
        for block, filters in enumerate((width, 2 * width, 4 * width), start=1):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
            x = layers.BatchNormalization(name=f"bn{block}")(x)
            x = layers.ReLU(name=f"relu{block}")(x)
            x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
        # The CAM layer is twice as wide as the last block: cheap at 1/8 resolution, and it gives
        # the GAP + Dense head enough channels to separate light fog from clear air.
        x = layers.Conv2D(8 * width, 3, padding="same", activation="relu", name=LAST_CONV_NAME)(x)
    else:
        backbone = keras.applications.MobileNetV2(
            input_shape=(int(h), int(w), 3), alpha=0.35, include_top=False, weights=None
        )
        x = backbone(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(int(num_classes), activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"edgecam_{arch}")


def build_augmentation(seed: int = 0):
    """The talk's ImageDataGenerator as Keras 3 preprocessing layers (for the tf.data pipeline).

    ``rotation_range=20`` → ``RandomRotation(20/360)`` (the factor is a fraction of a full turn,
    so ±20°); flips → ``RandomFlip("horizontal_and_vertical")``; ``zoom_range=0.1`` →
    ``RandomZoom(±0.1, ±0.1)`` with independent height and width factors, like
    ImageDataGenerator's independent zx, zy; ``fill_mode='reflect'`` on both geometric layers.
    ``rescale=1/255`` lives in the model itself (``Rescaling``), not here.

    Input/output shape: ``(batch, H, W, 3)`` float32 in 0–255.
    """
    keras = _keras()
    layers = keras.layers
    return keras.Sequential(
        [
            layers.RandomRotation(20 / 360, fill_mode="reflect", seed=seed),
            layers.RandomFlip("horizontal_and_vertical", seed=seed + 1),
            layers.RandomZoom((-0.1, 0.1), (-0.1, 0.1), fill_mode="reflect", seed=seed + 2),
        ],
        name="augmentation",
    )


def stratified_split(y: np.ndarray, test_fraction: float, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` with each class split in the same proportion.

    Every class with at least 2 samples puts at least one in each part.

    Raises:
        InputError: ``test_fraction`` not in (0, 1).
    """
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must be in (0, 1). Got {test_fraction}.")
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(test_fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        test_idx.append(idx[:k])
        train_idx.append(idx[k:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold number ``(N,)`` in ``[0, k)`` per sample, each class dealt round-robin over folds.

    Raises:
        InputError: ``k < 2`` or a class with fewer than ``k`` samples.
    """
    if int(k) < 2:
        raise InputError(f"K-fold needs k >= 2. Got {k}.")
    counts = np.bincount(y)
    present = counts[counts > 0]
    if present.min() < k:
        raise InputError(
            f"Stratified {k}-fold needs at least {k} images per class; the smallest class has "
            f"{present.min()}. Lower --kfold or add images."
        )
    rng = np.random.default_rng(seed)
    folds = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in np.flatnonzero(counts):
        idx = rng.permutation(np.flatnonzero(y == c))
        # Continue the round-robin across classes so fold sizes differ by at most one.
        folds[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return folds


def stratified_group_folds(y: np.ndarray, groups: Sequence, k: int, seed: int = 0) -> np.ndarray:
    """Fold number ``(N,)`` in ``[0, k)`` per sample, every group (a source video) in one fold.

    Stratified *grouped* K-fold: frames of one video are near-duplicates, so a video split across
    folds leaks its held-out frames into training. Groups are dealt largest first (ties in a
    seeded random order), each to the fold where it brings the per-class shares closest to
    ``1/k``: the least increase of ``Σ_c (n_fc / n_c − 1/k)²``, ties to the smaller fold. A fold
    is never left empty. A class found in fewer than ``k`` groups cannot be in every fold.

    Args:
        y: ``(N,)`` int class indices.
        groups: ``(N,)`` group key per sample (any values; compared as strings).
        k: number of folds.
        seed: order of equal-sized groups.

    Raises:
        InputError: ``k < 2``, lengths differ, or fewer than ``k`` groups.
    """
    y = np.asarray(y, dtype=np.int64)
    keys = np.asarray([str(g) for g in groups])
    if int(k) < 2:
        raise InputError(f"K-fold needs k >= 2. Got {k}.")
    if len(keys) != len(y):
        raise InputError(f"groups must give one group per sample: {len(keys)} groups for {len(y)} labels.")
    names, inverse = np.unique(keys, return_inverse=True)
    k = int(k)
    if len(names) < k:
        raise InputError(
            f"Grouped {k}-fold needs at least {k} source videos (groups); the data has {len(names)}. "
            f"Lower --kfold to {max(len(names), 2)}, or extract frames from more videos."
        )
    counts = np.zeros((len(names), int(y.max()) + 1))
    np.add.at(counts, (inverse, y), 1)
    totals = np.maximum(counts.sum(axis=0), 1)
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    fold_counts = np.zeros((k, counts.shape[1]))
    group_fold = np.empty(len(names), dtype=np.int64)
    for done, g in enumerate(order.tolist()):
        before = ((fold_counts / totals - 1 / k) ** 2).sum(axis=1)
        after = (((fold_counts + counts[g]) / totals - 1 / k) ** 2).sum(axis=1)
        sizes = fold_counts.sum(axis=1)
        empty = sizes == 0
        candidates = np.flatnonzero(empty) if empty.sum() >= len(names) - done else np.arange(k)
        best = candidates[np.lexsort((sizes[candidates], np.round(after - before, 12)[candidates]))[0]]
        fold_counts[best] += counts[g]
        group_fold[g] = best
    return group_fold[inverse]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


@dataclass(frozen=True)
class ClassReport:
    """Precision, recall, F1 and support of one class (0 where undefined)."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


def classification_report(cm: np.ndarray, class_names: Sequence[str]) -> Tuple[ClassReport, ...]:
    """Per-class precision/recall/F1 from a confusion matrix (rows true, columns predicted)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    reports = []
    for i, name in enumerate(class_names):
        p = tp[i] / predicted[i] if predicted[i] else 0.0
        r = tp[i] / actual[i] if actual[i] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        reports.append(ClassReport(str(name), float(p), float(r), float(f1), int(actual[i])))
    return tuple(reports)


def save_confusion_figure(cm: np.ndarray, class_names: Sequence[str], path, title: str = "") -> Path:
    """Draw the confusion matrix (row-normalised colours, counts written in) to a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    k = len(class_names)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.3 * k + 2.2, 1.1 * k + 1.8), dpi=110)
    try:
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                        fontsize=8, color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), class_names, rotation=30, ha="right")
        ax.set_yticks(range(k), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if title:
            ax.set_title(title, fontsize=10)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


@dataclass(frozen=True)
class ClassSupport:
    """How many images of a class the data holds, and in how many source videos (``None``: unknown)."""

    name: str
    images: int
    videos: Optional[int] = None


@dataclass(frozen=True)
class VideoAccuracy:
    """Held-out accuracy on the frames of one source video."""

    video: str
    images: int
    correct: int
    accuracy: float


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        accuracy: held-out accuracy (test split; out-of-fold over all images with K-fold).
        class_names: class order of the model's outputs.
        report: per-class precision/recall/F1/support on the held-out predictions.
        confusion: ``(K, K)`` int64, rows true, columns predicted (held-out predictions).
        model_path: the saved ``model.keras``.
        labels_path: ``labels.txt`` (class order, one per line).
        confusion_png: the confusion-matrix figure.
        metrics_path: ``training.json`` with all of the above and the settings.
        fold_accuracies: per-fold held-out accuracy with K-fold, else ``None``.
        arch, input_size, epochs, n_train, n_test: settings and split sizes (K-fold: of the
            saved model's fold).
        seconds: wall time of the training (fits and evaluation, not data loading).
        class_support: images (and source videos) per class in the whole data.
        per_video: held-out accuracy per source video, worst first, when the videos are known.
        grouping: one line saying how the split or folds were grouped by video.
    """

    accuracy: float
    class_names: Tuple[str, ...]
    report: Tuple[ClassReport, ...] = field(repr=False)
    confusion: np.ndarray = field(repr=False)
    model_path: Path = None
    labels_path: Path = None
    confusion_png: Path = None
    metrics_path: Path = None
    fold_accuracies: Optional[Tuple[float, ...]] = None
    arch: str = "small"
    input_size: Tuple[int, int] = (64, 64)
    epochs: int = 0
    n_train: int = 0
    n_test: int = 0
    seconds: float = 0.0
    class_support: Tuple[ClassSupport, ...] = ()
    per_video: Optional[Tuple[VideoAccuracy, ...]] = None
    grouping: str = ""


def _load_data(data, size):
    """Return ``(x float32 0–255, y int64, class_names, (H, W), paths or None)`` from a folder or arrays."""
    from toolkit.datasets.folder import FolderDataset, load_folder_dataset, parse_size

    paths = None
    if isinstance(data, (str, os.PathLike)):
        root = Path(data)
        if size is None:
            size = _manifest_size(root) or 64
        data = load_folder_dataset(root, size)
    if isinstance(data, FolderDataset):
        paths = data.paths
        data = (data.x, data.y, data.class_names)
    try:
        x, y, class_names = data
    except (TypeError, ValueError) as exc:
        raise InputError(
            "data must be a folder-per-class directory or a tuple (x, y, class_names). "
            f"Got {type(data).__name__}."
        ) from exc
    x = np.asarray(x)
    y = np.asarray(y, dtype=np.int64)
    class_names = tuple(str(c) for c in class_names)
    if x.ndim != 4 or x.shape[-1] != 3 or len(x) != len(y) or len(x) == 0:
        raise InputError(
            f"x must be (N, H, W, 3) RGB with one label per image. Got x {x.shape}, y {y.shape}."
        )
    if y.min() < 0 or y.max() >= len(class_names):
        raise InputError(
            f"Labels must be in [0, {len(class_names)}) for classes {class_names}. "
            f"Got range [{y.min()}, {y.max()}]."
        )
    if size is not None and tuple(x.shape[1:3]) != parse_size(size):
        import cv2

        h, w = parse_size(size)
        x = np.stack([cv2.resize(np.asarray(img), (w, h), interpolation=cv2.INTER_AREA) for img in x])
    return x.astype(np.float32), y, class_names, tuple(int(v) for v in x.shape[1:3]), paths


def _manifest_size(root: Path):
    manifest = root / "dataset.json"
    try:
        return tuple(json.loads(manifest.read_text(encoding="utf-8"))["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pipeline(tf, x, y, batch_size, shuffle, augmentation, seed):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augmentation is not None:
        ds = ds.map(lambda a, b: (augmentation(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _class_weights(y, num_classes):
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    # "Balanced" weights n / (K · n_c): each class contributes equally to the loss.
    return {i: float(len(y) / (np.count_nonzero(counts) * c)) for i, c in enumerate(counts) if c > 0}


def _fit_one(keras, tf, x_tr, y_tr, x_te, num_classes, size, arch, width, epochs, batch_size, seed,
             learning_rate, balanced, augment, verbose):
    keras.utils.set_random_seed(seed)
    model = build_model(num_classes, size, arch, width=width)
    steps = epochs * -(-len(x_tr) // batch_size)
    # Cosine decay to zero (Loshchilov & Hutter 2017, SGDR without restarts): the last epochs
    # settle the decision boundaries instead of hopping between them.
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    augmentation = build_augmentation(seed) if augment else None
    model.fit(
        _pipeline(tf, x_tr, y_tr, batch_size, True, augmentation, seed),
        epochs=epochs,
        verbose=verbose,
        class_weight=_class_weights(y_tr, num_classes) if balanced else None,
        shuffle=False,  # the tf.data pipeline shuffles (seeded)
    )
    probs = model.predict(x_te, batch_size=max(batch_size, 64), verbose=0)
    return model, np.argmax(probs, axis=1)


def _save_model(model, path: Path) -> Path:
    """``model.save`` to a hidden temporary ``.keras`` beside ``path``, fsync'd, then renamed."""
    try:
        with atomic_path(path) as tmp:
            model.save(tmp)
    except OSError as exc:
        raise OutputError(f"Saving the model to '{path}' failed: {exc}.") from exc
    return path


def _holdout(y, groups, test_fraction, seed):
    """``(train, test)`` indices: stratified, and grouped by video when ``groups`` is given.

    Grouped: the test part is one fold of ``round(1/test_fraction)`` grouped folds (fewer when
    there are fewer videos), so no video has frames on both sides.
    """
    n_groups = 0 if groups is None else len(set(groups.tolist()))
    if n_groups < 2:
        return stratified_split(y, test_fraction, seed)
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must be in (0, 1). Got {test_fraction}.")
    k = min(max(2, int(round(1 / test_fraction))), n_groups)
    folds = stratified_group_folds(y, groups, k, seed)
    return np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)


def _fit_and_evaluate(keras, tf, x, y, kfold, test_fraction, seed, progress, common, groups=None):
    """Fit on a stratified split (or K folds) and predict the held-out images.

    ``groups`` (``(N,)`` source video per image, or ``None``) keeps each video on one side of
    the split, or in one fold.

    Returns:
        ``(model, eval_indices, p_eval, fold_accuracies or None, n_train, n_test)``; with K folds
        the model is the fold model with the best held-out accuracy and the evaluation is over the
        out-of-fold predictions of every image.
    """
    if not kfold:
        tr, te = _holdout(y, groups, test_fraction, seed)
        model, p_eval = _fit_one(keras, tf, x[tr], y[tr], x[te], seed=seed, **common)
        return model, te, p_eval, None, len(tr), len(te)
    if groups is None:
        folds = stratified_folds(y, int(kfold), seed)
    else:
        folds = stratified_group_folds(y, groups, int(kfold), seed)
    predictions = np.empty_like(y)
    fold_acc, best = [], None
    for k in range(int(kfold)):
        tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        if progress:
            videos = "" if groups is None else f" ({len(set(groups[te].tolist()))} videos)"
            print(f"fold {k + 1}/{kfold}: train {len(tr)}, held out {len(te)}{videos}", flush=True)
        model, pred = _fit_one(keras, tf, x[tr], y[tr], x[te], seed=seed + k, **common)
        predictions[te] = pred
        fold_acc.append(float(np.mean(pred == y[te])))
        if best is None or fold_acc[-1] > best[0]:
            best = (fold_acc[-1], model, len(tr), len(te))
    _, model, n_train, n_test = best
    return model, np.arange(len(y)), predictions, fold_acc, n_train, n_test


def _training_json(accuracy, cm, report, class_names, fold_acc, settings, n_images, n_train, n_test,
                   seconds, keras_version, files) -> dict:
    """The ``training.json`` content (key order as documented)."""
    model_path, labels_path, png = files
    return {
        "format": "edgecam-training",
        "version": 1,
        "accuracy": accuracy,
        "evaluation": "kfold-out-of-fold" if settings["kfold"] else "stratified-holdout",
        "fold_accuracies": fold_acc,
        "class_names": list(class_names),
        "confusion": cm.tolist(),
        "report": [r.__dict__ for r in report],
        **settings,
        "n_images": int(n_images),
        "n_train": int(n_train),
        "n_test": int(n_test),
        "train_seconds": round(seconds, 2),
        "keras_version": keras_version,
        "model": model_path.name,
        "labels": labels_path.name,
        "confusion_png": png.name,
    }


def train(
    data,
    out_dir,
    epochs: int = 15,
    batch_size: int = 32,
    arch: str = "small",
    seed: int = 0,
    kfold: Optional[int] = None,
    size: Union[None, int, Tuple[int, int]] = None,
    test_fraction: float = 0.2,
    learning_rate: float = 2e-3,
    balanced: bool = True,
    augment: bool = True,
    width: int = 16,
    progress: bool = True,
    groups: Optional[Sequence] = None,
) -> TrainResult:
    """Train the talk's classifier and write ``model.keras``, ``labels.txt``, ``confusion.png``
    and ``training.json`` to ``out_dir``.

    Without ``kfold``: a stratified ``test_fraction`` split is held out; the model is trained on
    the rest and evaluated on it. With ``kfold=K``: stratified K-fold cross-validation; one model
    per fold, evaluated on its held-out fold; ``accuracy``, the report and the confusion matrix are
    over the out-of-fold predictions of every image, and the saved model is the fold model with
    the best held-out accuracy (its own fold's number is in ``fold_accuracies``).

    When each image's source video is known (``groups``, or the data folder's ``frames.json``), no
    video is on both sides (:func:`stratified_group_folds`); the result has per-video accuracy.
    Args:
        data: a folder-per-class directory (:func:`toolkit.datasets.folder.load_folder_dataset`), a
            ``FolderDataset``, a ``CropSet`` (:func:`toolkit.datasets.crops.load_crops`, grouped by
            board), or a tuple ``(x, y, class_names)`` with x ``(N, H, W, 3)`` RGB 0–255.
        out_dir: output directory.
        epochs: training epochs per model.
        batch_size: mini-batch size.
        arch: ``"small"`` or ``"mobilenetv2"``.
        seed: seed of the split, the weights, the shuffling and the augmentation.
        kfold: number of folds, or ``None`` for a single held-out split.
        size: model input ``(H, W)`` or int; default the dataset's size (``dataset.json``), or
            64 for a folder without one, or the arrays' size.
        test_fraction: held-out share without K-fold.
        learning_rate: Adam learning rate.
        balanced: weight the loss by inverse class frequency (for imbalanced data).
        augment: apply :func:`build_augmentation` to training batches.
        width: filters of the small CNN's first block (see :func:`build_model`).
        progress: show Keras' per-epoch progress.
        groups: ``(N,)`` source video of each image (overrides ``frames.json``).

    Returns:
        A :class:`TrainResult`.

    Raises:
        InputError: bad data or settings; OutputError: ``out_dir`` not writable;
        MissingDependencyError: TensorFlow/Keras not installed.
    """
    if arch not in ARCHITECTURES:
        raise InputError(f"arch must be one of {', '.join(ARCHITECTURES)}. Got {arch!r}.")
    if int(epochs) < 1 or int(batch_size) < 1:
        raise InputError(f"epochs and batch_size must be >= 1. Got {epochs}, {batch_size}.")
    out = ensure_writable_dir(out_dir)
    x, y, class_names, input_size, paths = _load_data(data, size)
    grouping = _video_grouping(data, paths, getattr(data, "groups", groups), len(y), announce=progress, kfold=kfold)
    num_classes = len(class_names)
    keras, tf = _keras(), _tf()
    verbose = (1 if sys.stdout.isatty() else 2) if progress else 0
    common = dict(num_classes=num_classes, size=input_size, arch=arch, width=int(width), epochs=int(epochs),
                  batch_size=int(batch_size), learning_rate=learning_rate, balanced=balanced,
                  augment=augment, verbose=verbose)
    start = time.perf_counter()
    fitted = _fit_and_evaluate(keras, tf, x, y, kfold, test_fraction, seed, progress, common, grouping.groups)
    model, eval_idx, p_eval, fold_acc, n_train, n_test = fitted
    seconds = time.perf_counter() - start

    settings = dict(arch=arch, width=int(width), input_size=list(input_size), epochs=int(epochs),
                    batch_size=int(batch_size), learning_rate=learning_rate, balanced_class_weights=balanced,
                    augmentation=augment, seed=int(seed), kfold=kfold)
    cm = confusion_matrix(y[eval_idx], p_eval, num_classes)
    figures = _video_figures(grouping, y, eval_idx, p_eval, class_names)
    return _write_outputs(out, model, cm, class_names, settings, fold_acc, (len(y), n_train, n_test), seconds,
                          keras.__version__, figures)


def _video_grouping(data, paths, groups, n: int, announce: bool = False, kfold=None):
    """The source video of each image: ``groups`` if given, else the data folder's ``frames.json``.

    With fewer videos in ``frames.json`` than folds (``kfold``, or the held-out split's 5), videos
    are cut into time blocks (:meth:`~toolkit.frames.VideoGroups.in_blocks`). ``announce`` prints
    how folds are grouped (when there are folds, or videos to group by).
    """
    from toolkit.frames import VideoGroups, video_groups

    if groups is not None:
        keys = np.asarray([str(g) for g in groups], dtype=object)
        if len(keys) != n:
            raise InputError(f"groups must give one source video per image: {len(keys)} for {n} images.")
        found = VideoGroups(keys, {k: k for k in keys.tolist()}, 0,
                            f"Folds grouped by the given groups ({len(set(keys.tolist()))} videos).")
    elif isinstance(data, (str, os.PathLike)) and paths:
        found = video_groups(Path(data), paths).in_blocks(int(kfold) if kfold else 5)
    else:
        found = VideoGroups(None, {}, n, "No source videos known (no frames.json): folds are stratified but "
                            "not grouped by video.")
    if announce and (kfold or found.groups is not None):
        print(found.note, flush=True)
    return found


def _video_figures(grouping, y, eval_idx, p_eval, class_names) -> dict:
    """Per-class support of the whole data and held-out accuracy per source video (worst first)."""
    known = grouping.groups is not None
    # The video of each image ("" when unknown); time blocks of one video count as that video.
    video = np.asarray([grouping.names.get(g, "") for g in grouping.groups.tolist()], dtype=object) if known else None
    support = []
    for c, name in enumerate(class_names):
        videos = len(set(video[y == c].tolist()) - {""}) if known else None
        support.append(ClassSupport(name, int(np.sum(y == c)), videos))
    per_video = None
    if known:
        held = video[eval_idx]
        correct = np.asarray(p_eval) == y[eval_idx]
        rows = []
        for name in sorted(set(held.tolist()) - {""}):
            mask = held == name
            hits = int(correct[mask].sum())
            rows.append(VideoAccuracy(name, int(mask.sum()), hits, hits / int(mask.sum())))
        per_video = tuple(sorted(rows, key=lambda r: (r.accuracy, r.video)))
    return {"grouping": grouping.note, "class_support": tuple(support), "per_video": per_video}


def _write_outputs(out: Path, model, cm: np.ndarray, class_names, settings: dict, fold_acc,
                   counts: Tuple[int, int, int], seconds: float, keras_version: str,
                   figures: Optional[dict] = None) -> TrainResult:
    """Write model.keras, labels.txt, confusion.png and training.json; return the result.

    ``figures``: ``grouping``, ``class_support`` and ``per_video`` (see :func:`_video_figures`).
    """
    figures = figures or {}
    n_images, n_train, n_test = counts
    accuracy = float(np.trace(cm) / max(cm.sum(), 1))
    report = classification_report(cm, class_names)
    model_path = _save_model(model, out / "model.keras")
    labels_path = atomic_write_text(out / "labels.txt", "\n".join(class_names) + "\n")
    kfold = settings["kfold"]
    what = f"{kfold}-fold out-of-fold" if kfold else f"held-out ({n_test} images)"
    png = save_confusion_figure(cm, class_names, out / "confusion.png",
                                f"{settings['arch']} CNN, {what} accuracy {accuracy:.1%}")
    metrics = _training_json(accuracy, cm, report, class_names, fold_acc, settings, n_images, n_train, n_test,
                             seconds, keras_version, (model_path, labels_path, png))
    metrics.update({key: _as_json(value) for key, value in figures.items()})
    metrics_path = atomic_write_text(out / "training.json", json.dumps(metrics, indent=1) + "\n")
    return TrainResult(
        accuracy=accuracy,
        class_names=class_names,
        report=report,
        confusion=cm,
        model_path=model_path,
        labels_path=labels_path,
        confusion_png=png,
        metrics_path=metrics_path,
        fold_accuracies=tuple(fold_acc) if fold_acc else None,
        arch=settings["arch"],
        input_size=tuple(settings["input_size"]),
        epochs=settings["epochs"],
        n_train=int(n_train),
        n_test=int(n_test),
        seconds=seconds,
        **figures,
    )


def _as_json(value):
    """Tuples of dataclasses as lists of dicts (for ``training.json``)."""
    if isinstance(value, tuple):
        return [v.__dict__ if hasattr(v, "__dict__") else v for v in value]
    return value
