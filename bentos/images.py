"""Image decoding shared by training and serving: bytes → RGB → fixed size → uint8 array.

Everything after this step (normalisation, pooling) lives inside the ONNX graph. This is
the only image code outside it, and training and serving both call it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from skewguard.errors import ImageError, PayloadTooLargeError

IMAGE_SIZE = 32
"""Side of the square every image is resized to."""
IMAGE_VALUES = IMAGE_SIZE * IMAGE_SIZE * 3
"""Number of uint8 values per decoded image (H × W × RGB)."""
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
"""The formats decoded. Pillow's other readers are never tried on a client's bytes: each is code
an attacker could reach, and fuzzing found two of them failing with errors no reader of these
raises (DDS: ``NotImplementedError``; TIFF, whose tags can point anywhere: ``TypeError``)."""
MAX_IMAGE_BYTES = 2_000_000
MAX_IMAGE_PIXELS = 4_000_000
MAX_REQUEST_PIXELS = 16_000_000
"""Decoded pixels one request's images may add up to (four images at ``MAX_IMAGE_PIXELS``).

Decoding costs per pixel, not per byte: a 2000×2000 bilevel PNG is ~500 bytes of base64 and
4 megapixels of work, so a request of many such images is small on the wire and seconds of
CPU. The budget is charged from the image headers, before any pixel is decoded."""


class PixelBudget:
    """The decoded pixels a request may still spend; ``charge`` refuses the image that overspends."""

    def __init__(self, limit: int = MAX_REQUEST_PIXELS) -> None:
        self.limit = limit
        self.spent = 0

    def charge(self, pixels: int, *, field: str, row: int) -> None:
        """Count ``pixels`` more, or raise ``PayloadTooLargeError`` naming ``field`` past the limit."""
        self.spent += pixels
        if self.spent > self.limit:
            raise PayloadTooLargeError(
                f"Field '{field}': the images up to row {row} decode to {self.spent} pixels; at most "
                f"{self.limit} per request are accepted (SKEWGUARD_MAX_REQUEST_PIXELS). Send fewer rows "
                "per request, or smaller images.",
                field=field,
            )


class OpenedImage:
    """An image whose header is read and checked: its size is known, no pixel is decoded yet."""

    def __init__(self, image: Image.Image, field: str) -> None:
        self._image = image
        self.field = field
        width, height = image.size
        self.pixels = width * height

    def decode(self) -> NDArray[np.uint8]:
        """The ``(IMAGE_SIZE, IMAGE_SIZE, 3)`` uint8 array (Pillow releases the GIL meanwhile)."""
        with _mapped_errors(self.field), self._image as img:
            img.load()
            rgb = img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def open_image(
    data: bytes,
    *,
    field: str = "image",
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> OpenedImage:
    """Read the header of encoded image bytes and check their size; decode later with ``decode()``.

    Raises ``ImageError`` for bytes that are no image and ``PayloadTooLargeError`` for
    oversized files and decompression bombs; both name ``field``.
    """
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"Field '{field}': the image is {len(data)} bytes; at most {max_bytes} are accepted.",
            field=field,
        )
    with _mapped_errors(field):
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise PayloadTooLargeError(
            f"Field '{field}': the image is {width}×{height} pixels; "
            f"at most {max_pixels} pixels are accepted.",
            field=field,
        )
    return OpenedImage(img, field)


def decode_image(
    data: bytes,
    *,
    field: str = "image",
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> NDArray[np.uint8]:
    """Decode encoded image bytes into a ``(IMAGE_SIZE, IMAGE_SIZE, 3)`` uint8 array.

    Raises ``ImageError`` for bytes that are not a complete image and
    ``PayloadTooLargeError`` for oversized files and decompression bombs; both name
    ``field``. The pixel limit is checked from the header, before any pixel is decoded.
    """
    return open_image(data, field=field, max_bytes=max_bytes, max_pixels=max_pixels).decode()


@contextlib.contextmanager
def _mapped_errors(field: str) -> Iterator[None]:
    """Pillow's errors for bytes it cannot decode, as ours (once, here)."""
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise PayloadTooLargeError(
            f"Field '{field}': the image would decompress to too many pixels ({exc}).",
            field=field,
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, NotImplementedError) as exc:
        raise ImageError(
            f"Field '{field}': expected a {', '.join(IMAGE_FORMATS)} image, "
            f"but the bytes could not be decoded ({exc}).",
            field=field,
        ) from exc


def pixel_stats(pixels: NDArray[Any]) -> tuple[float, float]:
    """Brightness and contrast of one image: mean and standard deviation of its 0–255 values.

    The one definition behind the training profile, the prediction log and the monitor.
    """
    values = np.asarray(pixels, dtype=np.float64)
    return float(values.mean()), float(values.std())


def decode_base64_image(text: str, *, field: str = "image") -> NDArray[np.uint8]:
    """Decode a base64 string (as sent in JSON) and then the image it holds."""
    return decode_image(base64_bytes(text, field=field), field=field)


def base64_bytes(text: str, *, field: str = "image") -> bytes:
    """The bytes of a base64 string (as sent in JSON); ``ImageError`` naming ``field`` if it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(
            f"Field '{field}': expected a base64-encoded image, but the text is not valid base64.",
            field=field,
        ) from exc


def encode_png(pixels: NDArray[np.uint8]) -> bytes:
    """Encode an RGB uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
