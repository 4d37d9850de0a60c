#!/usr/bin/env python
"""Fuzz image decoding: any bytes are a 32×32 RGB array, or an ``ImageError`` / 413, within the budget.

    .venv/bin/python tests/fuzz/fuzz_image.py [libFuzzer options] [corpus folders]

Each input is the bytes of an image as a client would send them (base64-decoded):
``bentos.images.open_image`` reads the header and checks the size, a ``PixelBudget`` is
charged, then ``decode()``. Any exception other than ``ImageError`` or
``PayloadTooLargeError`` is a finding, and so is an input slower than libFuzzer's ``-timeout``.
"""

from __future__ import annotations

import sys
import warnings

import atheris

with atheris.instrument_imports(include=["skewguard", "PIL"]):
    from skewguard.bentos.images import IMAGE_SIZE, PixelBudget, open_image
    from skewguard.errors import ImageError, PayloadTooLargeError

MAX_PIXELS = 1_000_000
"""Below the serving default (4 megapixels per image): keeps one run short, the code paths the same."""


def test_one_input(data: bytes) -> None:
    try:
        image = open_image(data, max_pixels=MAX_PIXELS)
        PixelBudget(MAX_PIXELS).charge(image.pixels, field="image", row=0)
        pixels = image.decode()
    except (ImageError, PayloadTooLargeError) as exc:
        refused = exc
    else:
        if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise AssertionError(f"decoded to {pixels.shape}")
        return
    if refused.field != "image" or not 400 <= refused.status_code < 500:
        raise AssertionError(f"refused as {refused.to_dict()} ({refused.status_code})")


if __name__ == "__main__":
    warnings.simplefilter("ignore")  # Pillow warns about odd files it still decodes: not a finding
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
