"""Reading still images from disk safely: one clear error per bad file, bombs refused undecoded."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from checkout_cam.errors import ImageReadError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class NotAnImage(ImageReadError):
    """The bytes are no image format we read."""


class ImageTooLarge(ImageReadError):
    """The header promises more pixels than allowed (a decompression bomb, or just absurd)."""


class CorruptImage(ImageReadError):
    """The header reads, the pixel data does not decode."""


def decode_image(data: bytes, name: str = "image", max_pixels: int = 50_000_000) -> np.ndarray:
    """Decode image bytes (an upload) to BGR uint8 (H, W, 3), in memory, refusing bombs before decoding.

    Raises NotAnImage, ImageTooLarge or CorruptImage, each naming ``name``.
    """
    if not data:
        raise NotAnImage(f"{name}: empty, no image data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                fmt = im.format or "?"
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{name}: refused, image dimensions are absurd (decompression bomb)") from None
    except (OSError, SyntaxError, ValueError):
        raise NotAnImage(f"{name}: not an image (or an unsupported format); send a JPEG or PNG photo") from None
    if width * height > max_pixels:
        raise ImageTooLarge(f"{name}: refused, {width}x{height} is more than the {max_pixels:,} pixel limit "
                            f"(preprocess.max_image_pixels)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise CorruptImage(f"{name}: corrupt {fmt} image (header reads as {width}x{height}, decoding failed)")
    return image


def read_image(path: str | Path, max_pixels: int = 50_000_000) -> np.ndarray:
    """Decode an image file to BGR uint8 (H, W, 3), refusing absurd dimensions before decoding."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror})") from None
    if size == 0:
        raise ImageReadError(f"{path}: file is empty")
    # PIL reads only the header here, so the pixel count is known before any decoding.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError:
        raise ImageReadError(f"{path}: refused, image dimensions are absurd (decompression bomb)") from None
    except PermissionError:
        raise ImageReadError(f"{path}: cannot read (permission denied)") from None
    except (OSError, SyntaxError, ValueError):
        raise ImageReadError(f"{path}: not an image file (or an unsupported/corrupt format)") from None
    if width * height > max_pixels:
        raise ImageReadError(f"{path}: refused, {width}x{height} is more than the {max_pixels:,} pixel "
                             f"limit (preprocess.max_image_pixels)")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"{path}: corrupt image data (header reads as {width}x{height}, decoding failed)")
    return image


def list_images(paths: list[str | Path]) -> list[Path]:
    """Expand directories (recursively, sorted) into image files; keep explicit files as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()))
        else:
            out.append(p)
    return out
