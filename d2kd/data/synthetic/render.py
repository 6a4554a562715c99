"""Rendering one synthetic image: colours, shapes, a cluttered scene and the occlusion rule.

Every image is drawn from its own ``numpy.random.default_rng`` seeded by ``(spec.seed, split,
index)``, with only exactly rounded float arithmetic, Python's ``math`` and PIL rasterisation,
so a spec gives byte-identical images in any process, in any order (for one Pillow version).
Any change here that alters a pixel or a box must bump ``DATASET_VERSION`` (spec.py).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .spec import (
    CLASS_HUES,
    SPLITS,
    SYNTHETIC_CLASSES,
    SYNTHETIC_COLOR_NAMES,
    SYNTHETIC_SHAPES,
    SyntheticSpec,
    check_split,
)

__all__ = ["SUPERSAMPLE", "PlacedItem", "compose_scene", "rasterize_shape", "render_image"]

# Off-colours for unlabelled distractors: (hue degrees, hue jitter); grey is handled apart.
# They sit >= 15 degrees of hue away from every labelled colour's jitter range.
_DISTRACTOR_HUES = {
    "orange": (32.0, 5.0),
    "yellow": (56.0, 6.0),
    "cyan": (182.0, 8.0),
    "purple": (280.0, 8.0),
    "magenta": (318.0, 6.0),
}
_CLASS_HUE_JITTER = 12.0
_DISTRACTOR_SHAPES = ("star", "line", "arc")
SUPERSAMPLE = 2  # draw at 2x and average 2x2 blocks: cheap anti-aliasing


# ----------------------------------------------------------------------------------------------
# Colours
# ----------------------------------------------------------------------------------------------


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    """HSV -> RGB in [0, 255] via colorsys (pure Python arithmetic, hence reproducible)."""
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v)
    return np.array([r * 255.0, g * 255.0, b * 255.0], dtype=np.float32)


def _class_color(rng: np.random.Generator, color_name: str) -> np.ndarray:
    """A jittered instance of a labelled colour: hue +-12 deg, varied saturation and brightness."""
    hue = CLASS_HUES[color_name] + rng.uniform(-_CLASS_HUE_JITTER, _CLASS_HUE_JITTER)
    return _hsv(hue, rng.uniform(0.65, 1.0), rng.uniform(0.55, 1.0))


def _distractor_color(rng: np.random.Generator) -> np.ndarray:
    """An off-colour no labelled class uses: grey (1 in 6) or a hue outside the class ranges."""
    names = ("grey",) + tuple(_DISTRACTOR_HUES)
    name = names[int(rng.integers(len(names)))]
    if name == "grey":
        return _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.1), rng.uniform(0.3, 0.95))
    hue, jitter = _DISTRACTOR_HUES[name]
    return _hsv(hue + rng.uniform(-jitter, jitter), rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0))


def _muted_color(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation background colour, so backgrounds never look like a labelled object."""
    return _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.85))


# ----------------------------------------------------------------------------------------------
# Shapes: each rasterised alone into a tight boolean mask at supersampled resolution
# ----------------------------------------------------------------------------------------------


def _rotate(points: list[tuple[float, float]], angle: float, c: float) -> list[tuple[float, float]]:
    """Rotate points (relative to the origin) by ``angle`` radians and move them to (c, c)."""
    ca, sa = math.cos(angle), math.sin(angle)
    return [(c + x * ca - y * sa, c + x * sa + y * ca) for x, y in points]


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, r: float, c: float, g: dict) -> None:
    """Paint shape ``kind`` of half-extent ``r`` centred at (c, c) with the geometry ``g``."""
    a = g.get("angle", 0.0)
    if kind == "circle":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
    elif kind == "ring":
        ri = r * g["inner"]
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
        draw.ellipse([c - ri, c - ri, c + ri, c + ri], fill=0)
    elif kind == "arc":  # an open ring ("C"): a distractor that looks like a ring, minus a wedge
        ri = r * g["inner"]
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
        draw.ellipse([c - ri, c - ri, c + ri, c + ri], fill=0)
        start = math.degrees(a)
        draw.pieslice([c - r - 2, c - r - 2, c + r + 2, c + r + 2], start, start + g["gap"], fill=0)
    elif kind == "square":
        h = r * 0.8  # side 1.6r, so a rotated square stays within ~r of its centre
        draw.polygon(_rotate([(-h, -h), (h, -h), (h, h), (-h, h)], a, c), fill=255)
    elif kind == "diamond":  # an elongated rhombus standing on a vertex
        w = r * g["aspect"]
        draw.polygon(_rotate([(0, -r), (w, 0), (0, r), (-w, 0)], a, c), fill=255)
    elif kind == "triangle":
        pts = [(r * math.cos(t), r * math.sin(t)) for t in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
        draw.polygon(_rotate(pts, a, c), fill=255)
    elif kind == "cross":
        t = r * g["arm"]
        h = r * 0.9
        draw.polygon(_rotate([(-h, -t), (h, -t), (h, t), (-h, t)], a, c), fill=255)
        draw.polygon(_rotate([(-t, -h), (t, -h), (t, h), (-t, h)], a, c), fill=255)
    elif kind == "star":
        n, ratio = g["points"], g["inner"]
        pts = []
        for k in range(2 * n):
            rad = r if k % 2 == 0 else r * ratio
            t = math.pi * k / n - math.pi / 2
            pts.append((rad * math.cos(t), rad * math.sin(t)))
        draw.polygon(_rotate(pts, a, c), fill=255)
    elif kind == "line":
        ends = _rotate([(-r, 0.0), (r, 0.0)], a, c)
        draw.line(ends, fill=255, width=max(1, int(round(g["width"]))))
    else:
        raise ValueError(f"[synthetic] unknown shape kind {kind!r}")


def _sample_geometry(rng: np.random.Generator, kind: str) -> dict:
    """Draw the free shape parameters: rotations are limited where they would confuse classes.

    Squares and crosses turn at most 20 degrees (so a square never becomes a diamond and a cross
    never an x); diamonds are elongated (width 0.55-0.75 of height) so they differ from a
    rotated square; rings keep a hole of at least half their radius so it survives at 6 px.
    """
    if kind in ("square", "cross"):
        g = {"angle": math.radians(rng.uniform(-20, 20))}
        if kind == "cross":
            g["arm"] = rng.uniform(0.25, 0.36)
        return g
    if kind == "diamond":
        return {"angle": math.radians(rng.uniform(-12, 12)), "aspect": rng.uniform(0.55, 0.75)}
    if kind == "triangle":
        return {"angle": rng.uniform(0, 2 * math.pi)}
    if kind == "ring":
        return {"inner": rng.uniform(0.5, 0.65)}
    if kind == "arc":
        return {
            "inner": rng.uniform(0.5, 0.65),
            "angle": rng.uniform(0, 2 * math.pi),
            "gap": rng.uniform(70, 150),
        }
    if kind == "star":
        return {
            "points": int(rng.integers(4, 7)),
            "inner": rng.uniform(0.35, 0.5),
            "angle": rng.uniform(0, 2 * math.pi),
        }
    if kind == "line":
        return {"angle": rng.uniform(0, math.pi), "width": rng.uniform(1.5, 5.0)}
    return {}


def rasterize_shape(kind: str, size: float, geometry: dict) -> np.ndarray:
    """Rasterise one shape into its tight boolean mask (supersampled pixels).

    Args:
        kind: a name from SYNTHETIC_SHAPES or the distractor shapes ("star", "line", "arc").
        size: the shape's extent in supersampled pixels (about its box side).
        geometry: shape parameters, as from ``_sample_geometry``.

    Returns:
        A 2-D bool array cropped to the shape's pixels.
    """
    r = size / 2.0
    side = int(math.ceil(size)) + 8
    img = Image.new("L", (side, side), 0)
    _draw_shape(ImageDraw.Draw(img), kind, r, side / 2.0, geometry)
    mask = np.asarray(img) > 127
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:  # cannot happen for size >= 4, but never return an empty box
        raise RuntimeError(f"[synthetic] shape {kind!r} of size {size} rasterised to nothing")
    return mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]


# ----------------------------------------------------------------------------------------------
# Scene: background, items, compositing with the occlusion rule
# ----------------------------------------------------------------------------------------------


@dataclass
class PlacedItem:
    """One painted item: a tight mask at (x0, y0) in supersampled pixels, its colour and label.

    ``category_id`` is 1..K for a labelled object and None for an unlabelled distractor.
    """

    mask: np.ndarray
    x0: int
    y0: int
    color: np.ndarray
    category_id: int | None = None
    shade: tuple[float, float] = (0.0, 0.0)  # lighting slopes across x and y


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """A cluttered n x n x 3 float32 background: gradient, blotches, stripes or checks, noise."""
    ramp = np.arange(n, dtype=np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    scale = np.float32(1.0 / (n * 1.4142))
    t = ramp[None, :] * np.float32(math.cos(theta)) + ramp[:, None] * np.float32(math.sin(theta))
    t = t * scale + np.float32(0.5)
    c1, c2 = _muted_color(rng), _muted_color(rng)
    img = c1 + (c2 - c1) * t[..., None]
    if rng.uniform() < 0.7:  # low-frequency colour blotches, upsampled smoothly by PIL
        g = int(rng.integers(3, 12))
        grid = np.stack([_muted_color(rng) for _ in range(g * g)]).reshape(g, g, 3)
        blot = Image.fromarray(grid.astype(np.uint8), "RGB").resize((n, n), Image.BICUBIC)
        alpha = np.float32(rng.uniform(0.3, 0.8))
        img = img * (1 - alpha) + np.asarray(blot, dtype=np.float32) * alpha
    if rng.uniform() < 0.5:  # stripes or a checkerboard, integer arithmetic only
        period = int(rng.integers(6, 40))
        idx = np.arange(n, dtype=np.int32)
        a, b = int(rng.integers(-3, 4)), int(rng.integers(-3, 4))
        if a == 0 and b == 0:
            a = 1
        pattern = ((idx[None, :] * a + idx[:, None] * b) // period) % 2
        if rng.uniform() < 0.4:
            pattern = (pattern + (idx[:, None] // period) % 2 + (idx[None, :] // period) % 2) % 2
        amp = np.float32(rng.uniform(6, 28))
        tint = (amp * _muted_color(rng) / np.float32(255.0)).astype(np.float32)
        img = img + (pattern.astype(np.float32) - np.float32(0.5))[..., None] * tint
    return img.astype(np.float32)


def _paint(canvas: np.ndarray, owner: np.ndarray, item: PlacedItem, index: int) -> None:
    """Paint a shaded item (lit by a linear gradient) and record it as its pixels' owner."""
    h, w = item.mask.shape
    region = canvas[item.y0 : item.y0 + h, item.x0 : item.x0 + w]
    gx, gy = item.shade
    sx = np.float32(gx) * (np.arange(w, dtype=np.float32) / np.float32(w) - np.float32(0.5))
    sy = np.float32(gy) * (np.arange(h, dtype=np.float32) / np.float32(h) - np.float32(0.5))
    shade = np.float32(1.0) + sx[None, :] + sy[:, None]
    fill = item.color.astype(np.float32)[None, None, :] * shade[..., None]
    region[item.mask] = fill[item.mask]
    owner[item.y0 : item.y0 + h, item.x0 : item.x0 + w][item.mask] = index


def compose_scene(
    background: np.ndarray, items: list[PlacedItem], min_visible: float
) -> tuple[np.ndarray, list[dict]]:
    """Paint items in order over the background and apply the occlusion rule.

    Args:
        background: (S, S, 3) float32 supersampled background.
        items: items in painting order (later ones occlude earlier ones).
        min_visible: keep a labelled item only if this fraction of its pixels is still visible.

    Returns:
        The supersampled float32 canvas and one annotation dict per kept labelled item (in
        painting order) with category_id, bbox [x, y, w, h] of the full shape in output pixels,
        area (full shape area in output pixels) and visible (the visible fraction).
    """
    canvas = background.copy()
    owner = np.full(background.shape[:2], -1, dtype=np.int32)
    for k, item in enumerate(items):
        _paint(canvas, owner, item, k)
    visible = np.bincount(owner.ravel() + 1, minlength=len(items) + 1)[1:]
    s = float(SUPERSAMPLE)
    anns = []
    for k, item in enumerate(items):
        if item.category_id is None:
            continue
        full = int(item.mask.sum())
        frac = visible[k] / full
        if frac < min_visible:
            continue
        h, w = item.mask.shape
        anns.append(
            {
                "category_id": int(item.category_id),
                "bbox": [item.x0 / s, item.y0 / s, w / s, h / s],
                "area": full / (s * s),
                "visible": round(float(frac), 4),
            }
        )
    return canvas, anns


def _place(rng: np.random.Generator, spec: SyntheticSpec, labelled: bool) -> PlacedItem:
    """Sample one labelled object or distractor with a position that keeps it inside the image."""
    n = spec.image_size * SUPERSAMPLE
    size = math.exp(rng.uniform(math.log(spec.min_size), math.log(spec.max_size))) * SUPERSAMPLE
    if labelled:
        cls = int(rng.integers(len(SYNTHETIC_CLASSES)))
        color_name, kind = SYNTHETIC_CLASSES[cls].split("_")
        color, category_id = _class_color(rng, color_name), cls + 1
    else:
        if rng.uniform() < 0.5:  # a labelled shape in an off-colour
            kind, color = SYNTHETIC_SHAPES[int(rng.integers(len(SYNTHETIC_SHAPES)))], None
        else:  # another kind of shape, in any colour (labelled colours included)
            kind, color = _DISTRACTOR_SHAPES[int(rng.integers(len(_DISTRACTOR_SHAPES)))], None
            if kind == "line":
                size = min(size * 1.6, spec.max_size * 1.5 * SUPERSAMPLE)
            if rng.uniform() < 0.5:
                color = _class_color(rng, SYNTHETIC_COLOR_NAMES[int(rng.integers(3))])
        if color is None:
            color = _distractor_color(rng)
        category_id = None
    mask = rasterize_shape(kind, size, _sample_geometry(rng, kind))
    mask = mask[:n, :n]
    h, w = mask.shape
    x0 = int(rng.integers(0, n - w + 1))
    y0 = int(rng.integers(0, n - h + 1))
    shade = (rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3))
    return PlacedItem(mask, x0, y0, color, category_id, shade)


def _image_rng(spec: SyntheticSpec, split: str, index: int) -> np.random.Generator:
    """The image's own generator: independent of every other image and of rendering order."""
    return np.random.default_rng([spec.seed, SPLITS.index(check_split(split)), index])


def render_image(spec: SyntheticSpec, split: str, index: int) -> tuple[np.ndarray, list[dict]]:
    """Render image ``index`` of ``split`` in memory.

    Args:
        spec: the dataset spec.
        split: "train" or "val".
        index: 0-based image index within the split.

    Returns:
        A (H, W, 3) uint8 RGB array and its annotations (see :func:`compose_scene`), of which
        there are between ``spec.min_objects`` and ``spec.max_objects`` (a few more in the rare
        case objects had to be added on top to replace occluded ones).
    """
    rng = _image_rng(spec, split, index)
    n = spec.image_size * SUPERSAMPLE
    background = _background(rng, n)
    n_obj = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    n_dis = int(rng.integers(spec.min_distractors, spec.max_distractors + 1))
    items = [_place(rng, spec, labelled=True) for _ in range(n_obj)]
    items += [_place(rng, spec, labelled=False) for _ in range(n_dis)]
    items = [items[int(k)] for k in rng.permutation(len(items))]
    canvas, anns = compose_scene(background, items, spec.min_visible)
    for _ in range(4 * spec.max_objects):  # top up: objects added on top are mostly visible
        if len(anns) >= spec.min_objects:
            break
        items.append(_place(rng, spec, labelled=True))
        canvas, anns = compose_scene(background, items, spec.min_visible)
    # 2x2 block average (explicit adds keep the arithmetic order fixed), then pixel noise.
    c = canvas
    small = (c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2]) * np.float32(0.25)
    sigma = rng.uniform(2.0, 9.0)
    small = small + rng.standard_normal(small.shape, dtype=np.float32) * np.float32(sigma)
    image = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    return image, anns
