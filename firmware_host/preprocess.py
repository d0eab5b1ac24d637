"""Image checks and preprocessing exactly as recorded in the metadata (numpy + OpenCV)."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .metadata import Preprocessing

__all__ = ["check_image", "preprocess", "bgr_to_rgb"]


def check_image(image, where: str = "image") -> np.ndarray:
    """Validate an ``H×W`` gray or ``H×W×3`` RGB uint8 image and return it as an array.

    Accepts numpy arrays and PIL images. Raises :class:`InputError` naming what was found.
    """
    if not isinstance(image, np.ndarray):
        if hasattr(image, "mode") and hasattr(image, "size"):  # PIL.Image, without importing PIL
            image = np.asarray(image.convert("L" if image.mode in ("L", "I", "F") else "RGB"))
        else:
            raise InputError(
                f"{where} must be a numpy array or PIL image. Got {type(image).__name__}."
            )
    if image.dtype != np.uint8:
        raise InputError(
            f"{where} must be uint8 (0-255 pixels). Got dtype {image.dtype}. "
            "Convert with np.clip(x, 0, 255).astype(np.uint8); edgecam applies the model's "
            "scaling itself."
        )
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] == 4:
        raise InputError(
            f"{where} has 4 channels (RGBA), shape {image.shape}. Drop alpha first: image[..., :3]."
        )
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise InputError(
            f"{where} must be H×W (gray) or H×W×3 (RGB). Got shape {image.shape}."
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{where} is empty: shape {image.shape}.")
    return image


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV frames are BGR; edgecam's API takes RGB.

    A contiguous copy via ``cv2.cvtColor``: a reversed numpy view makes OpenCV's resize about
    5× slower.
    """
    import cv2

    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else frame


def preprocess(image: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Resize, convert colour and scale one checked uint8 image to ``(H, W, C)`` float32."""
    import cv2

    img = image
    if img.shape[:2] != (pre.height, pre.width):
        shrink = img.shape[0] > pre.height and img.shape[1] > pre.width
        interp = cv2.INTER_AREA if (shrink and pre.interpolation == "area") else cv2.INTER_LINEAR
        img = cv2.resize(img, (pre.width, pre.height), interpolation=interp)
    if pre.color == "gray":
        if img.ndim == 3:
            img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        img = img[..., None]
    else:
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        if pre.color == "bgr":
            img = img[..., ::-1]
    x = img.astype(np.float32)
    x *= np.asarray(pre.scale, dtype=np.float32)
    x += np.asarray(pre.offset, dtype=np.float32)
    return x
