"""Datasets edgecam can generate or read without downloading anything (numpy + OpenCV only)."""

from . import fog
from .fog import CLASS_NAMES, generate_dataset, render_drive_video
from .folder import FolderDataset, load_folder_dataset

__all__ = ["fog", "CLASS_NAMES", "FolderDataset", "generate_dataset", "load_folder_dataset", "render_drive_video"]
