"""Image decoding shared by training and serving: bytes → RGB → fixed size → uint8 array.

Everything after this step (normalisation, pooling) lives inside the ONNX graph. This is
the only image code outside it, and training and serving both call it.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from skewguard.errors import ImageError, PayloadTooLargeError

IMAGE_SIZE = 32
"""Side of the square every image is resized to."""
IMAGE_VALUES = IMAGE_SIZE * IMAGE_SIZE * 3
"""Number of uint8 values per decoded image (H × W × RGB)."""
MAX_IMAGE_BYTES = 2_000_000
MAX_IMAGE_PIXELS = 4_000_000


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
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"Field '{field}': the image is {len(data)} bytes; at most {max_bytes} are accepted.",
            field=field,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise PayloadTooLargeError(
                        f"Field '{field}': the image is {width}×{height} pixels; "
                        f"at most {max_pixels} pixels are accepted.",
                        field=field,
                    )
                img.load()
                rgb = img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    except PayloadTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLargeError(
            f"Field '{field}': the image would decompress to too many pixels ({exc}).",
            field=field,
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(
            f"Field '{field}': expected PNG, JPEG or another common image format, "
            f"but the bytes could not be decoded ({exc}).",
            field=field,
        ) from exc
    return np.asarray(rgb, dtype=np.uint8)


def pixel_stats(pixels: NDArray[Any]) -> tuple[float, float]:
    """Brightness and contrast of one image: mean and standard deviation of its 0–255 values.

    The one definition behind the training profile, the prediction log and the monitor.
    """
    values = np.asarray(pixels, dtype=np.float64)
    return float(values.mean()), float(values.std())


def decode_base64_image(text: str, *, field: str = "image") -> NDArray[np.uint8]:
    """Decode a base64 string (as sent in JSON) and then the image it holds."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(
            f"Field '{field}': expected a base64-encoded image, but the text is not valid base64.",
            field=field,
        ) from exc
    return decode_image(data, field=field)


def encode_png(pixels: NDArray[np.uint8]) -> bytes:
    """Encode an RGB uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
