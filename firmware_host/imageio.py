"""Image files: which files are images, and reading one safely. Every edgecam command uses this.

**The listing rule** (:func:`list_images`), the same for ``convert --calibration``,
``validate --images``, ``dataset --images``, ``explain``, ``predict`` and
``run --source FOLDER``:

* a file is an image when its suffix is in :data:`IMAGE_SUFFIXES` (any case);
* hidden files and hidden folders (name starting with ``.``, e.g. the ``.part`` files of an
  atomic write in progress) are skipped;
* only regular files are listed (symlinks to regular files count); FIFOs, sockets and devices
  are skipped with a warning, since opening a FIFO blocks until someone writes to it;
* folders are searched recursively, except ``run --source FOLDER``, whose frames are the
  files of that one folder (``recursive=False``); symlinked folders are not followed;
* the order is the relative path, sorted as POSIX text (``a/b.png`` before ``a_b.png``).

**Reading** (:func:`load_image`, :func:`read_image`): the file is opened once, checked to be a
regular file, and its header parsed (PNG, JPEG, BMP, WebP, TIFF, PNM) *before* the rest is read or
anything is decoded. A file whose header claims more than :func:`max_image_pixels` pixels
(default :data:`DEFAULT_MAX_IMAGE_PIXELS`, 4096 × 2160) is refused: a 250 KB PNG can claim
16000 × 16000 pixels and cost gigabytes once decoded (a "decompression bomb"). A baseline JPEG
over the limit is decoded at 1/2, 1/4 or 1/8 scale instead (libjpeg decodes reduced in
memory proportional to the output), when that brings it under the limit. Raise the limit
with the environment variable ``EDGECAM_MAX_IMAGE_PIXELS``, the module setting
:data:`MAX_IMAGE_PIXELS`, or ``edgecam predict --max-image-pixels``. Formats OpenCV could
decode but edgecam cannot size from the header (GIF, JPEG 2000, AVIF, HDR, EXR, …) are
refused too.

numpy + OpenCV only; images are OpenCV BGR uint8 ``(H, W, 3)`` unless ``rgb=True``.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Tuple, Union

import numpy as np

from ._io import NotRegularFileError, open_regular
from .errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_IMAGE_PIXELS",
    "ENV_MAX_IMAGE_PIXELS",
    "ImageHeader",
    "ImageListing",
    "ImageTooLargeError",
    "max_image_pixels",
    "scan_images",
    "list_images",
    "is_image_file",
    "image_header",
    "load_image",
    "read_image",
]

log = logging.getLogger("edgecam.imageio")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm")

DEFAULT_MAX_IMAGE_PIXELS = 4096 * 2160
"""8.8 MP, a DCI 4K frame (its BGR pixels are 25 MiB; predict on a PNG that size peaks near 500 MB).

Larger baseline JPEGs, such as 12 MP phone photos, are decoded at 1/2 scale."""

MAX_IMAGE_PIXELS: Optional[int] = None
"""Set to override the limit for this process (``None``: the environment variable or the default)."""

ENV_MAX_IMAGE_PIXELS = "EDGECAM_MAX_IMAGE_PIXELS"

# Whole-file reads are bounded too: 8 bytes per allowed pixel (16-bit RGBA, uncompressed)
# plus room for metadata such as EXIF thumbnails or ICC profiles.
_BYTES_PER_PIXEL_BOUND = 8
_FILE_SLACK = 8 << 20


class ImageTooLargeError(InputError):
    """An image's header claims more pixels than the limit allows (a likely decompression bomb)."""


def max_image_pixels() -> int:
    """The pixel limit in force: :data:`MAX_IMAGE_PIXELS`, else ``$EDGECAM_MAX_IMAGE_PIXELS``, else the default.

    Raises:
        InputError: the setting is not a positive whole number.
    """
    value = MAX_IMAGE_PIXELS
    where = "firmware_host.imageio.MAX_IMAGE_PIXELS"
    if value is None:
        env = os.environ.get(ENV_MAX_IMAGE_PIXELS, "").strip()
        if not env:
            return DEFAULT_MAX_IMAGE_PIXELS
        value, where = env, ENV_MAX_IMAGE_PIXELS
    return _check_limit(value, where)


def _check_limit(value, where: str) -> int:
    try:
        number = float(value) if isinstance(value, str) else value
        limit = int(number)
        ok = limit == number and 1 <= limit <= 2**40
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise InputError(
            f"{where} must be a whole number of pixels between 1 and 2**40. Got: {value!r}. "
            f"Example: {ENV_MAX_IMAGE_PIXELS}=40000000 allows 40 MP images."
        )
    return limit


# -- listing -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageListing:
    """What :func:`scan_images` found below a folder.

    Attributes:
        images: image files (by suffix), sorted by relative path.
        others: other regular, non-hidden files (callers count them as skipped).
        special: FIFOs, sockets, devices and dangling links with an image suffix: never
            opened, skipped with a warning.
    """

    images: Tuple[Path, ...]
    others: Tuple[Path, ...] = ()
    special: Tuple[Path, ...] = ()


def _has_image_suffix(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _is_regular(path: Union[str, os.PathLike]) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def is_image_file(path: Union[str, os.PathLike]) -> bool:
    """True when ``path`` passes the listing rule: image suffix, not hidden, a regular file."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and _has_image_suffix(name) and _is_regular(path)


def scan_images(folder: Union[str, os.PathLike], recursive: bool = True) -> ImageListing:
    """Apply the listing rule (module docstring) to ``folder``.

    Args:
        folder: the folder.
        recursive: search sub-folders too (hidden and symlinked folders are not entered).

    Raises:
        InputError: ``folder`` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"Image folder '{root}' does not exist or is not a directory. Pass a folder of images.")
    images, others, special = [], [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if _is_regular(path):
                (images if _has_image_suffix(name) else others).append(path)
            elif _has_image_suffix(name):
                special.append(path)
    key = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    for path in special:
        log.warning("Skipped '%s': not a regular file (FIFO, socket, device or dangling link).", path)
    return ImageListing(tuple(sorted(images, key=key)), tuple(sorted(others, key=key)), tuple(sorted(special, key=key)))


def list_images(folder: Union[str, os.PathLike], recursive: bool = True) -> List[Path]:
    """The image files below ``folder``, by the listing rule of the module docstring.

    Raises:
        InputError: ``folder`` is not a directory.
    """
    return list(scan_images(folder, recursive=recursive).images)


def filter_images(paths: Iterable[Union[str, os.PathLike]]) -> List[str]:
    """Those of ``paths`` that pass :func:`is_image_file` (e.g. a glob's matches), warning about special files."""
    kept = []
    for path in paths:
        if is_image_file(path):
            kept.append(os.fspath(path))
        elif _has_image_suffix(os.fspath(path)) and os.path.lexists(path) and not _is_regular(path):
            log.warning("Skipped '%s': not a regular file (FIFO, socket, device or dangling link).", path)
    return kept


# -- headers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, before any decoding.

    Attributes:
        format: ``png``, ``jpeg``, ``bmp``, ``webp``, ``tiff`` or ``pnm``.
        width, height: pixels.
        progressive: a progressive JPEG (its decoder buffers the whole image, so it is never
            decoded reduced).
    """

    format: str
    width: int
    height: int
    progressive: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height


class _HeaderError(Exception):
    """The header cannot be parsed (internal: becomes an InputError naming the file)."""


class _Truncated(_HeaderError):
    """The header runs past the bytes given (read more of the file, or it is truncated)."""


def _unpack(fmt: str, data: bytes, pos: int):
    if pos < 0 or pos + struct.calcsize(fmt) > len(data):
        raise _Truncated("header is truncated")
    return struct.unpack_from(fmt, data, pos)


def _png(data: bytes) -> ImageHeader:
    if data[12:16] != b"IHDR":
        raise _HeaderError("PNG without an IHDR chunk")
    width, height = _unpack(">II", data, 16)
    return ImageHeader("png", width, height)


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}


def _jpeg(data: bytes) -> ImageHeader:
    pos = 2
    while True:
        pos = data.find(b"\xff", pos)  # libjpeg tolerates junk between segments
        if pos < 0:
            raise _Truncated("JPEG without a frame header (SOF)")
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= len(data):
            raise _Truncated("JPEG without a frame header (SOF)")
        marker = data[pos]
        pos += 1
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length
        if marker in (0xD9, 0xDA):
            raise _HeaderError("JPEG image data before its frame header (SOF)")
        (length,) = _unpack(">H", data, pos)
        if marker in _JPEG_SOF:
            _, height, width = _unpack(">BHH", data, pos + 2)
            if height == 0:  # the height comes later, in a DNL marker: cannot be checked up front
                raise _HeaderError("JPEG whose height is only given after the image data (DNL)")
            return ImageHeader("jpeg", width, height, progressive=marker in _JPEG_PROGRESSIVE)
        if length < 2:
            raise _HeaderError("JPEG segment with a bad length")
        pos += length


def _bmp(data: bytes) -> ImageHeader:
    (size,) = _unpack("<I", data, 14)
    if size == 12:  # BITMAPCOREHEADER (OS/2)
        width, height = _unpack("<HH", data, 18)
    else:
        width, height = _unpack("<ii", data, 18)
    return ImageHeader("bmp", abs(width), abs(height))


def _webp(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: the canvas size bounds every frame and tile
        raw = _unpack("<6B", data, 24)
        width = 1 + (raw[0] | raw[1] << 8 | raw[2] << 16)
        height = 1 + (raw[3] | raw[4] << 8 | raw[5] << 16)
    elif chunk == b"VP8L":
        (sig,) = _unpack("<B", data, 20)
        if sig != 0x2F:
            raise _HeaderError("lossless WebP with a bad signature")
        (bits,) = _unpack("<I", data, 21)
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise _HeaderError("lossy WebP with a bad start code")
        width, height = (v & 0x3FFF for v in _unpack("<HH", data, 26))
    else:
        raise _HeaderError(f"WebP with an unknown first chunk {bytes(chunk)!r}")
    return ImageHeader("webp", width, height)


def _tiff(data: bytes) -> ImageHeader:
    end = "<" if data[:2] == b"II" else ">"
    (magic,) = _unpack(end + "H", data, 2)
    big = magic == 43  # BigTIFF: 8-byte offsets and counts
    if big:
        (ifd,) = _unpack(end + "Q", data, 8)
        (count,) = _unpack(end + "Q", data, ifd)
        first, step = ifd + 8, 20
    else:
        (ifd,) = _unpack(end + "I", data, 4)
        (count,) = _unpack(end + "H", data, ifd)
        first, step = ifd + 2, 12
    size = {}
    for i in range(min(count, 4096)):
        entry = first + i * step
        tag, kind = _unpack(end + "HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3), LONG (4) or LONG8 (16)
            value_at = entry + (12 if big else 8)
            fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if fmt is None:
                raise _HeaderError(f"TIFF size tag {tag} of type {kind}")
            (size[tag],) = _unpack(end + fmt, data, value_at)
            if len(size) == 2:
                return ImageHeader("tiff", size[256], size[257])
    raise _HeaderError("TIFF without ImageWidth/ImageLength in its first directory")


def _pnm(data: bytes) -> ImageHeader:
    tokens: List[bytes] = []
    pos, n = 2, min(len(data), 4096)
    while len(tokens) < 2 and pos < n:
        c = data[pos : pos + 1]
        if c == b"#":
            while pos < n and data[pos : pos + 1] not in (b"\n", b"\r"):
                pos += 1
        elif c.isspace():
            pos += 1
        else:
            start = pos
            while pos < n and not data[pos : pos + 1].isspace() and data[pos : pos + 1] != b"#":
                pos += 1
            tokens.append(data[start:pos])
    if len(tokens) < 2 or not all(t.isdigit() and len(t) <= 12 for t in tokens):
        raise _HeaderError("PNM header without a width and height")
    return ImageHeader("pnm", int(tokens[0]), int(tokens[1]))


def _parse_header(data: bytes) -> ImageHeader:
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(data)
    if head.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if head.startswith(b"BM"):
        return _bmp(data)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _webp(data)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff(data)
    if head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6"):
        return _pnm(data)
    raise InputError(
        f"not an image edgecam reads (starts with {head[:8]!r}); use PNG, JPEG, BMP, WebP, TIFF or PNM"
    )


def _checked(header: ImageHeader) -> ImageHeader:
    if header.width < 1 or header.height < 1:
        raise InputError(f"image header claims an empty {header.width}x{header.height} {header.format}")
    return header


def image_header(data: bytes) -> ImageHeader:
    """The format and size an image file's bytes declare, without decoding the pixels.

    Raises:
        InputError: not a format edgecam can size from its header, or a damaged header.
    """
    try:
        return _checked(_parse_header(data))
    except _HeaderError as exc:
        raise InputError(f"damaged image header ({exc})") from None


# -- reading -------------------------------------------------------------------------------
_HEAD_BYTES = 256 << 10  # enough for the header of almost every file (JPEG: after EXIF/ICC segments)


def _read_checked(path: str, limit: int) -> Tuple[bytes, ImageHeader]:
    """Open ``path`` once, refuse non-regular files, parse the header, then read the rest."""
    try:
        with open_regular(path) as (handle, size):
            if size > limit * _BYTES_PER_PIXEL_BOUND + _FILE_SLACK:
                raise ImageTooLargeError(
                    f"the file is {size / 2**20:.0f} MiB, more than an image within the pixel limit of "
                    f"{limit:,} can need. Raise the limit with {ENV_MAX_IMAGE_PIXELS}"
                )
            data = handle.read(_HEAD_BYTES)
            try:
                header = _parse_header(data)
            except _Truncated:
                if len(data) < _HEAD_BYTES:
                    raise
                data += handle.read()  # the header is further in (large metadata segments)
                header = _parse_header(data)
            header = _checked(header)
            if _reduction(header, limit):  # only an image that will be decoded is read whole
                data += handle.read()
            return data, header
    except _HeaderError as exc:
        raise InputError(f"damaged image header ({exc})") from None
    except InputError:  # already says what is wrong (an InputError is also a ValueError)
        raise
    except NotRegularFileError as exc:
        raise InputError(f"not a regular file ({exc.strerror})") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read it ({getattr(exc, 'strerror', None) or exc})") from None


def _reduction(header: ImageHeader, limit: int) -> int:
    """1 (full size), or the JPEG scale denominator (2, 4, 8) that fits ``limit``; 0 if none does."""
    if header.pixels <= limit:
        return 1
    if header.format != "jpeg" or header.progressive:
        return 0
    for factor in (2, 4, 8):
        # libjpeg rounds reduced sizes up.
        if -(-header.width // factor) * -(-header.height // factor) <= limit:
            return factor
    return 0


def load_image(path: Union[str, os.PathLike], rgb: bool = False, max_pixels: Optional[int] = None) -> np.ndarray:
    """Decode an image file as ``(H, W, 3)`` BGR (or RGB) uint8, checking its size first.

    The file is opened once (a FIFO is refused without blocking), read whole, and its header
    parsed: an image over the pixel limit is refused before anything is decoded, or, for a
    baseline JPEG, decoded at 1/2, 1/4 or 1/8 scale when that fits. 16-bit and gray files
    become 8-bit BGR.

    Args:
        path: the file.
        rgb: return RGB (C-contiguous) instead of OpenCV's BGR.
        max_pixels: the pixel limit (default :func:`max_image_pixels`).

    Raises:
        ImageTooLargeError: the header claims more pixels than the limit.
        InputError: anything else that stops the file from giving an image (one line naming
            the file and the reason).
    """
    import cv2

    limit = max_image_pixels() if max_pixels is None else _check_limit(max_pixels, "max_pixels")
    name = os.fspath(path)
    try:
        data, header = _read_checked(name, limit)
    except ImageTooLargeError as exc:
        raise ImageTooLargeError(f"'{name}': {exc}.") from None
    except InputError as exc:
        raise InputError(f"'{name}': {exc}.") from None
    factor = _reduction(header, limit)
    if factor == 0:
        raise ImageTooLargeError(
            f"'{name}': its {header.format.upper()} header says {header.width}x{header.height} = "
            f"{header.pixels:,} pixels, over the limit of {limit:,} (a decompression bomb, or a "
            f"photo to downscale first). Raise the limit with {ENV_MAX_IMAGE_PIXELS}="
            f"{header.pixels} (or predict --max-image-pixels) if the file is trusted."
        )
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
    if factor > 1:
        log.info("'%s' is %dx%d: decoded at 1/%d scale to stay under %d pixels.", name, header.width,
                 header.height, factor, limit)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except (cv2.error, ValueError, MemoryError) as exc:
        raise InputError(f"'{name}': OpenCV cannot decode it ({str(exc).strip().splitlines()[-1:] or exc}).") from None
    del data
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
        or image.size == 0
    ):
        raise InputError(f"'{name}': not a decodable {header.format.upper()} image (truncated or corrupt).")
    # A decoder must never hand back more than its header promised (EXIF rotation swaps H and W).
    if image.shape[0] * image.shape[1] > limit:
        raise ImageTooLargeError(f"'{name}': decoded to {image.shape[1]}x{image.shape[0]}, over the limit of {limit} pixels.")
    return np.ascontiguousarray(image[..., ::-1]) if rgb else image


def read_image(path: Union[str, os.PathLike], rgb: bool = False, max_pixels: Optional[int] = None) -> Optional[np.ndarray]:
    """:func:`load_image`, or ``None`` when the file gives no image: folder readers skip and count it.

    Never raises for a bad file (missing, unreadable, a FIFO, truncated, not an image, over the
    pixel limit). Refusals the user can act on (over the pixel limit, not a regular file) are
    logged as one warning line on the ``edgecam.imageio`` logger.

    Raises:
        InputError: only for a bad pixel-limit setting (``EDGECAM_MAX_IMAGE_PIXELS``).
    """
    limit = max_image_pixels() if max_pixels is None else _check_limit(max_pixels, "max_pixels")
    try:
        return load_image(path, rgb=rgb, max_pixels=limit)
    except ImageTooLargeError as exc:
        log.warning("Skipped %s", exc)
    except InputError as exc:
        if "not a regular file" in str(exc):
            log.warning("Skipped %s", exc)
    return None
