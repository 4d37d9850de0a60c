"""A request's rows → validated model values, without holding the event loop: big image work runs off it.

Decoding an image costs per pixel: a 32×32 image is tens of µs, a 2000×2000 one tens of ms.
So the rows are encoded on the event loop only when that is cheap for sure:

- at most ``INLINE_IMAGES`` images: their headers are read on the loop (µs each) and charged to
  the request's pixel budget (``skewguard.bentos.images.PixelBudget``, a 413 before any pixel is
  decoded); up to ``INLINE_PIXELS`` in all are decoded there too, more in the decoding thread;
- more images than that: reading their headers is work too, so everything runs in the thread.

The thread is one per process (``DECODE_THREADS``), so requests with big images queue behind
each other rather than take the cores from the event loop, while small ones never wait for
it. Pillow releases the GIL while it decodes. A request whose decoding does not finish
within what is left of its budget is a ``BudgetExceededError`` (503, naming the image field):
the budget ran out in the gateway's own work, not upstream.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from skewguard.bentos.inputs import Values, prepare_rows
from skewguard.bentos.spec import InputSpec
from skewguard.errors import BudgetExceededError

INLINE_IMAGES = 8
"""At most this many images in a request: their headers are read on the event loop."""
INLINE_PIXELS = 256 * 256
"""At most this many decoded pixels in a request: decoded on the event loop (well under 1 ms)."""
DECODE_THREADS = 1


@functools.cache
def _decoder() -> ThreadPoolExecutor:
    """The process's decoding thread, started on first use (so after a pre-fork, in each worker)."""
    return ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="skewguard-decode")


async def encode_request(
    spec: InputSpec,
    rows: Sequence[Mapping[str, Any]],
    *,
    allowed_extra: Sequence[str],
    max_pixels: int,
    deadline: float,
) -> Values:
    """A served request's rows validated (``prepare_rows``) and their images decoded, within
    ``max_pixels`` and before ``deadline`` (monotonic); the arrays are built per gathered run."""
    images = [f.name for f in spec if f.kind == "image"]
    if not images:
        return prepare_rows(spec, rows, allowed_extra=allowed_extra).values()
    if len(rows) * len(images) > INLINE_IMAGES:
        return await _off_loop(
            lambda: prepare_rows(spec, rows, allowed_extra=allowed_extra, max_pixels=max_pixels).values(),
            deadline,
            images[0],
        )
    prepared = prepare_rows(spec, rows, allowed_extra=allowed_extra, max_pixels=max_pixels)
    if prepared.pixels <= INLINE_PIXELS:
        return prepared.values()
    return await _off_loop(prepared.values, deadline, images[0])


async def _off_loop(work: Callable[[], Values], deadline: float, field: str) -> Values:
    """``work()`` in the decoding thread; not started, or not awaited further, once ``deadline`` passed."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_decoder(), work)
    try:
        return await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.0))
    except TimeoutError as exc:  # a job still queued is cancelled; one running finishes unheard
        raise BudgetExceededError(
            f"Field '{field}': decoding the request's images did not finish within its time budget "
            "(SKEWGUARD_REQUEST_BUDGET_MS); the gateway is busy decoding other large images, or these "
            "take too long. Retry, or send fewer or smaller images.",
            field=field,
        ) from exc
