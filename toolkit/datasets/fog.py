"""Fog-level road scenes: procedural rendering with exact depth, and atmospheric scattering.

This module gathers the public names of the fog dataset, which live in five modules:

* :mod:`toolkit.datasets.physics` — scattering model, visibility, the four classes;
* :mod:`toolkit.datasets.scene` — the procedural road scene renderer and fogged samples;
* :mod:`toolkit.datasets.photos` — fogging the user's own photos (horizon depth prior);
* :mod:`toolkit.datasets.writer` — the dataset on disk;
* :mod:`toolkit.datasets.drive` — the drive video;

and the generic folder-per-class loader in :mod:`toolkit.datasets.folder`.

The model (I = J·t + A·(1 − t), t = exp(−β·d), V = 3.912/β) is described in
:mod:`toolkit.datasets.physics` and docs/fog.md.

Everything here is numpy + OpenCV, importable on the device (no TensorFlow).

Layouts: images are ``(H, W, 3)`` RGB (uint8 0–255, or float32 0–1 where stated); depth maps are
``(H, W)`` float32 metres; sizes are ``(height, width)``.
"""

from __future__ import annotations

from .drive import DriveVideo, fog_schedule, render_drive_video
from .folder import FolderDataset, load_folder_dataset
from .photos import estimate_horizon, horizon_depth_prior
from .physics import (CLASS_NAMES, CLASS_VISIBILITY_RANGES_M, IMBALANCE_RATIOS, KOSCHMIEDER_CONSTANT,
                      SKY_DEPTH_M, VISIBILITY_THRESHOLDS_M, apply_fog, beta_from_visibility, fog_class,
                      sample_visibility, transmission, visibility_from_beta)
from .scene import FogSample, render_scene, sample
from .writer import class_counts, generate_dataset

__all__ = [
    "CLASS_NAMES",
    "KOSCHMIEDER_CONSTANT",
    "VISIBILITY_THRESHOLDS_M",
    "CLASS_VISIBILITY_RANGES_M",
    "IMBALANCE_RATIOS",
    "SKY_DEPTH_M",
    "FogSample",
    "FolderDataset",
    "DriveVideo",
    "transmission",
    "apply_fog",
    "beta_from_visibility",
    "visibility_from_beta",
    "fog_class",
    "render_scene",
    "sample",
    "sample_visibility",
    "class_counts",
    "estimate_horizon",
    "horizon_depth_prior",
    "generate_dataset",
    "load_folder_dataset",
    "fog_schedule",
    "render_drive_video",
]
