"""Procedural product listings for the "marketplace returns" demo data.

A listing is an item's hidden condition (fragile, oversized, slim fit, final sale,
refurbished; a defect; a dark photo) and the noisy views a model sees of it: a short
free-text description and a 32×32 PNG photo. ``returns_data`` decides what was
bought and turns the hidden condition into returns. Every random draw comes from the
generator passed in, so the same seed gives the same bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from skewguard.bentos.images import IMAGE_SIZE, encode_png

ATTRIBUTE_PHRASES = ("fragile", "oversized", "slim fit", "final sale", "refurbished-certified")
"""Description phrases naming the latent item attributes, in attribute-column order."""

# Chance of each hidden attribute per category, in ATTRIBUTE_PHRASES order.
_ATTRIBUTE_P: dict[str, tuple[float, ...]] = {
    "electronics": (0.25, 0.05, 0.00, 0.10, 0.30),
    "apparel": (0.02, 0.12, 0.35, 0.18, 0.00),
    "home": (0.30, 0.25, 0.00, 0.12, 0.03),
    "beauty": (0.15, 0.00, 0.00, 0.15, 0.00),
    "toys": (0.12, 0.12, 0.00, 0.12, 0.02),
    "sports": (0.03, 0.20, 0.12, 0.12, 0.05),
    "drones": (0.30, 0.05, 0.00, 0.05, 0.15),
}
_DEFECT_RATE, _DARK_PHOTO_RATE = 0.10, 0.15
_MENTION_RATE = 0.9
_FALSE_MENTION_RATE = 0.01
_NON_ASCII_RATE = 0.02
_MAX_WORDS = 15

_NOUNS: dict[str, tuple[str, ...]] = {
    "electronics": ("headphones", "charger", "speaker", "keyboard", "monitor", "tablet"),
    "apparel": ("shirt", "jacket", "dress", "jeans", "sweater", "sneakers"),
    "home": ("lamp", "mug", "vase", "cushion", "shelf", "blanket"),
    "beauty": ("serum", "lipstick", "perfume", "shampoo", "moisturizer", "palette"),
    "toys": ("puzzle", "robot", "doll", "blocks", "kite", "plush"),
    "sports": ("racket", "yoga-mat", "dumbbell", "helmet", "bottle", "backpack"),
    "drones": ("drone", "quadcopter", "propeller", "gimbal"),
}
_GENERAL_WORDS = tuple(
    "new black white blue red green grey navy beige pink gold silver classic modern "  # noqa: SIM905 - prose
    "vintage premium basic soft durable lightweight compact portable cotton wool "
    "leather wooden steel ceramic glass plastic bamboo organic handmade original "
    "genuine set pack of two three large small medium mini pro plus edition gift "
    "for women men kids home office travel outdoor summer winter everyday with "
    "case cover box and in great condition brand quality style comfortable elegant "
    "bright matte glossy waterproof wireless rechargeable adjustable foldable".split()
)
_NON_ASCII_WORDS = ("café", "naïve", "größe", "crème", "jalapeño", "façade", "🎁", "✨", "👍")
_UNSEEN_WORDS = tuple(
    "cottagecore gorpcore athleisure y2k dupe haul unboxing upcycled biodegradable "  # noqa: SIM905 - prose
    "magsafe usb-c oled e-ink modular holographic iridescent chunky oversize-fit "
    "quiet-luxury retro-gaming smart-ring air-fryer matcha crossbody puffer cargo "
    "barrel-leg lug-sole mesh-back cold-brew standing-desk".split()
)
BASE_VOCABULARY = frozenset(
    {word for category, nouns in _NOUNS.items() if category != "drones" for word in nouns}
    | set(_GENERAL_WORDS)
    | set(_NON_ASCII_WORDS)
    | {word for phrase in ATTRIBUTE_PHRASES for word in phrase.split()}
)
"""Every whitespace-separated word a description can hold with default drift knobs."""

# (shape: 0 ellipse, 1 box, 2 cross; half-width factor; hue, hue jitter, saturation, value)
_LOOKS: dict[str, tuple[int, float, float, float, float, float]] = {
    "electronics": (1, 1.0, 0.60, 0.05, 0.25, 0.35),
    "apparel": (0, 0.8, 0.00, 0.50, 0.60, 0.80),
    "home": (1, 1.0, 0.08, 0.05, 0.50, 0.70),
    "beauty": (1, 0.45, 0.90, 0.05, 0.40, 0.90),
    "toys": (0, 1.0, 0.00, 0.50, 0.90, 0.95),
    "sports": (0, 1.0, 0.33, 0.05, 0.70, 0.70),
    "drones": (2, 1.0, 0.00, 0.00, 0.00, 0.25),
}
_CHUNK = 1024


@dataclass(frozen=True, slots=True)
class Listings:
    """Per item: the hidden condition, and the description and photo that show it."""

    attributes: NDArray[np.bool_]  # one column per ATTRIBUTE_PHRASES entry
    defect: NDArray[np.bool_]
    dark_photo: NDArray[np.bool_]
    descriptions: list[str]
    images: list[bytes]


def draw_listings(rng: np.random.Generator, categories: Sequence[str], brightness: float) -> Listings:
    """Draw each item's hidden condition, then describe and photograph it."""
    chance = np.array([_ATTRIBUTE_P[c] for c in categories]).reshape(-1, len(ATTRIBUTE_PHRASES))
    attributes = rng.random(chance.shape) < chance
    defect = rng.random(len(categories)) < _DEFECT_RATE
    dark = rng.random(len(categories)) < _DARK_PHOTO_RATE
    descriptions = _draw_descriptions(rng, categories, attributes)
    images = _draw_images(rng, categories, defect, dark, brightness)
    return Listings(attributes, defect, dark, descriptions, images)


def _draw_descriptions(
    rng: np.random.Generator, categories: Sequence[str], attributes: NDArray[np.bool_]
) -> list[str]:
    """Describe each item in 4–15 words; ``attributes`` has one column per phrase.

    A true attribute is mentioned with probability 0.9 (sellers forget), a false one
    with 0.01 (sellers exaggerate); ~2 % of rows carry a non-ASCII word.
    """
    n = len(categories)
    draws = rng.random((n, len(ATTRIBUTE_PHRASES)))
    mentioned = np.where(attributes, draws < _MENTION_RATE, draws < _FALSE_MENTION_RATE)
    phrase_words = np.array([len(p.split()) for p in ATTRIBUTE_PHRASES])
    n_filler = np.maximum(rng.integers(4, _MAX_WORDS + 1, n) - mentioned @ phrase_words, 1)
    general = rng.integers(0, len(_GENERAL_WORDS), (n, _MAX_WORDS))
    noun_pick = rng.integers(0, 1 << 30, n)
    order_keys = rng.random((n, _MAX_WORDS + len(ATTRIBUTE_PHRASES)))
    non_ascii = rng.random(n) < _NON_ASCII_RATE
    non_ascii_pick = rng.integers(0, len(_NON_ASCII_WORDS), n)
    texts: list[str] = []
    for i in range(n):
        tokens = [_GENERAL_WORDS[j] for j in general[i, : n_filler[i] - 1]]
        if non_ascii[i]:
            tokens = [_NON_ASCII_WORDS[non_ascii_pick[i]], *tokens[1:]]
        tokens += [p for p, m in zip(ATTRIBUTE_PHRASES, mentioned[i], strict=True) if m]
        tokens = [tokens[k] for k in np.argsort(order_keys[i, : len(tokens)], kind="stable")]
        nouns = _NOUNS[categories[i]]
        texts.append(" ".join([*tokens, nouns[noun_pick[i] % len(nouns)]]))
    return texts


def shift_vocabulary(rng: np.random.Generator, texts: list[str], share: float) -> list[str]:
    """Replace ``share`` of all words by words ``BASE_VOCABULARY`` never uses."""
    words = [text.split() for text in texts]
    flat = np.array([w for row in words for w in row], dtype=object)
    replace = rng.random(len(flat)) < share
    flat[replace] = np.array(_UNSEEN_WORDS, dtype=object)[
        rng.integers(0, len(_UNSEEN_WORDS), int(replace.sum()))
    ]
    bounds = np.cumsum([0, *(len(row) for row in words)])
    return [" ".join(flat[a:b]) for a, b in itertools.pairwise(bounds)]


def _draw_images(
    rng: np.random.Generator,
    categories: Sequence[str],
    defect: NDArray[np.bool_],
    dark: NDArray[np.bool_],
    brightness: float,
) -> list[bytes]:
    """Photograph each item as a 32×32 RGB PNG.

    A defective item shows a brown blotch and a yellowed, dull cast; a dark photo is
    blurred and under-exposed; ``brightness`` (fraction of 255) is added to every pixel.
    """
    looks = np.array([_LOOKS[c] for c in categories], dtype=np.float64).reshape(-1, 6)
    images: list[bytes] = []
    for lo in range(0, len(looks), _CHUNK):
        hi = lo + _CHUNK
        pixels = _draw_chunk(rng, looks[lo:hi], defect[lo:hi], dark[lo:hi], brightness)
        images.extend(encode_png(img) for img in pixels)
    return images


def _hsv_to_rgb(hsv: NDArray[np.float64]) -> NDArray[np.float64]:
    """Vectorised HSV → RGB for an ``(n, 3)`` array with values in [0, 1]."""
    h, s, v = hsv[:, 0:1] * 6.0, hsv[:, 1:2], hsv[:, 2:3]
    k = (np.array([5.0, 3.0, 1.0]) + h) % 6.0
    rgb: NDArray[np.float64] = v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb


def _draw_chunk(
    rng: np.random.Generator,
    looks: NDArray[np.float64],
    defect: NDArray[np.bool_],
    dark: NDArray[np.bool_],
    brightness: float,
) -> NDArray[np.uint8]:
    """Render one chunk of photos as an ``(m, 32, 32, 3)`` uint8 array."""
    m = len(looks)
    grid = np.arange(IMAGE_SIZE, dtype=np.float32)
    centre = (16.0 + rng.normal(0.0, 2.0, (m, 2))).astype(np.float32)
    radius = rng.uniform(6.0, 11.0, (m, 2)) * np.stack([looks[:, 1], np.ones(m)], axis=1)
    dx = (grid[None, None, :] - centre[:, 0, None, None]) / radius[:, 0, None, None].astype(np.float32)
    dy = (grid[None, :, None] - centre[:, 1, None, None]) / radius[:, 1, None, None].astype(np.float32)
    shape = looks[:, 0, None, None]
    box = (np.abs(dx) <= 1.0) & (np.abs(dy) <= 1.0)
    cross = box & ((np.abs(dx) <= 0.2) | (np.abs(dy) <= 0.2))
    mask = np.where(shape == 0, dx**2 + dy**2 <= 1.0, np.where(shape == 1, box, cross))
    hue = (looks[:, 2] + rng.uniform(-1.0, 1.0, m) * looks[:, 3]) % 1.0
    colour = 255.0 * _hsv_to_rgb(np.stack([hue, looks[:, 4], looks[:, 5]], axis=1))
    shading = np.clip(1.1 - 0.15 * (dx + dy), 0.7, 1.3)[..., None]
    tilt = rng.uniform(-12.0, 12.0, (m, 1, 1)) * (grid[None, :, None] / 32.0 - 0.5)
    background = (rng.uniform(200.0, 240.0, (m, 1, 1)) + tilt).astype(np.float32)[..., None]
    img = np.where(mask[..., None], colour[:, None, None, :].astype(np.float32) * shading, background)
    img[np.roll(mask, (2, 2), axis=(1, 2)) & ~mask] *= 0.8  # the product's shadow
    _apply_defects(rng, img, centre, radius, defect)
    img[dark] = _box_blur(img[dark]) * 0.55
    img += rng.standard_normal(img.shape, dtype=np.float32) * 2.5 + brightness * 255.0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _apply_defects(
    rng: np.random.Generator,
    img: NDArray[np.float32],
    centre: NDArray[np.float32],
    radius: NDArray[np.float64],
    defect: NDArray[np.bool_],
) -> None:
    """Draw a brown blotch on defective items and give their photo a yellowed cast."""
    grid = np.arange(IMAGE_SIZE, dtype=np.float32)
    spot = (centre + rng.uniform(-0.5, 0.5, centre.shape) * radius)[defect]
    size = rng.uniform(1.5, 3.0, len(centre))[defect, None, None]
    blotch = (grid[None, None, :] - spot[:, 0, None, None]) ** 2 + (
        grid[None, :, None] - spot[:, 1, None, None]
    ) ** 2 <= size**2
    marked = img[defect]
    marked[blotch] = (110.0, 70.0, 35.0)
    img[defect] = marked * np.array([1.0, 0.93, 0.72], dtype=np.float32) + 12.0


def _box_blur(img: NDArray[np.float32]) -> NDArray[np.float32]:
    """3x3 box blur over the two spatial axes, edges replicated."""
    padded = np.pad(img, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    total = np.zeros_like(img)
    for dy in range(3):
        for dx in range(3):
            total += padded[:, dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE, :]
    return total / np.float32(9.0)
