"""MNIST-like digits rendered by the project, for DFAD's classification sanity check.

Each image is one digit 0-9 drawn with PIL's default font (a scalable FreeType font when
Pillow has FreeType, else its bitmap font scaled up) at a random size, stroke width,
rotation and offset, on a black 32x32 canvas, plus a little pixel noise: enough variety that a
LeNet-5 needs to learn shapes, deterministic from a seed, no download.
"""

from functools import lru_cache
from typing import Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["render_digits", "DIGITS_MEAN", "DIGITS_STD"]

# Normalisation of the rendered set (measured on render_digits(6000, seed=0)); LeNet inputs and
# GeneratorA's final non-affine BatchNorm both work in this standardised space.
DIGITS_MEAN, DIGITS_STD = 0.156, 0.322


@lru_cache(maxsize=None)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only, no size argument
        return ImageFont.load_default()


def _glyph(digit: int, rng: np.random.Generator, side: int) -> np.ndarray:
    size = int(rng.integers(side * 5 // 8, side * 7 // 8 + 1))
    stroke = int(rng.integers(0, 3))
    canvas = Image.new("L", (side * 2, side * 2), 0)
    ImageDraw.Draw(canvas).text(
        (side, side),
        str(digit),
        fill=255,
        font=_font(size),
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=255,
    )
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
    dx, dy = rng.integers(-side // 8, side // 8 + 1, size=2)
    left, top = side // 2 + int(dx), side // 2 + int(dy)
    return np.asarray(canvas.crop((left, top, left + side, top + side)), dtype=np.float32)


def render_digits(n: int, seed: int = 0, side: int = 32) -> Tuple[torch.Tensor, torch.Tensor]:
    """Render ``n`` labelled digit images.

    Args:
        n: number of images (labels cycle 0-9 in a shuffled order).
        seed: the whole set is a function of it.
        side: image side in pixels.

    Returns:
        images (n, 1, side, side) float in [0, 1] and labels (n,) int64.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10)
    images = np.stack([_glyph(int(d), rng, side) for d in labels]) / 255.0
    images = np.clip(images + rng.normal(0, 0.03, images.shape), 0, 1).astype(np.float32)
    return torch.from_numpy(images)[:, None], torch.from_numpy(labels).long()
