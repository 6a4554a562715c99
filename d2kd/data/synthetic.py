"""An embedded, procedurally rendered object-detection dataset.

No pretrained weights and no COCO exist where d2kd is tested, so tests, the quickstart and the
benchmarks train on this dataset instead. It is built to be *small* (128 px images, a RetinaNet
trains on a CPU in minutes) yet *hard enough that capacity pays*, so that a big teacher clearly
beats a small student and knowledge distillation has a gap to close:

* 18 classes = 6 shapes x 3 colours; colours are jittered in hue, saturation and brightness and
  objects are shaded, so a class is never one pixel value;
* small objects (6-40 px, log-uniform, so most are small);
* textured / gradient / blotchy backgrounds with pixel noise;
* unlabelled distractors: labelled shapes in off-colours (grey, orange, yellow, cyan, purple,
  magenta) and other shapes (stars, lines, open arcs) in any colour;
* occlusion: items are painted in random order; a labelled object whose visible pixels fall under
  ``spec.min_visible`` of its full shape loses its annotation. Boxes are the tight box of the full
  (unoccluded) shape.

Every image is rendered from its own ``numpy.random.default_rng`` seeded by
``(spec.seed, split, index)``, using only exactly rounded float arithmetic, Python's ``math`` and
PIL rasterisation, so a spec gives byte-identical PNGs and json for any number of processes (and on
any machine with the same Pillow version).

Datasets are cached under ``<root>/synthetic/<spec.key()>/``; ``root`` defaults to ``$D2KD_CACHE``
or ``~/.cache/d2kd``. ``register_synthetic`` registers detectron2 datasets lazily: nothing is
rendered until the dataset is first loaded.

Evaluation note: ``COCOEvaluator`` reads ``MetadataCatalog.get(name).json_file`` when it is
constructed. When the cache root is not fixed at registration, ``json_file``/``image_root`` are set
the first time the dataset is loaded, so load the dataset (detectron2's trainers build the test
loader before the evaluator) or call :func:`ensure_registered_rendered` before building the
evaluator.

CLI::

    python -m d2kd.data.synthetic --preview out.png [--split val] [--num 8] [--dataset synth]
    python -m d2kd.data.synthetic --render [--dataset synth] [--root DIR]
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import pathlib
import shutil
import time
import uuid
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "DATASET_VERSION",
    "SYNTHETIC_SHAPES",
    "SYNTHETIC_COLOR_NAMES",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_COLORS",
    "SyntheticSpec",
    "BUILTIN_SPECS",
    "cache_root",
    "dataset_dir",
    "render_image",
    "render_synthetic",
    "register_synthetic",
    "register_builtin",
    "ensure_registered_rendered",
]

logger = logging.getLogger(__name__)

# Bump whenever a change alters any rendered pixel or annotation: it is part of spec.key(), so
# cached datasets (and teachers keyed by it) are never silently reused across renderers.
DATASET_VERSION = 1

SYNTHETIC_SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
# Base hue in degrees of each labelled colour.
_CLASS_HUES = {"red": 0.0, "green": 120.0, "blue": 230.0}
SYNTHETIC_COLOR_NAMES = tuple(_CLASS_HUES)
# Category id k+1 is SYNTHETIC_CLASSES[k] (COCO ids are 1-based; detectron2 maps them to 0..K-1).
SYNTHETIC_CLASSES = [f"{c}_{s}" for c in SYNTHETIC_COLOR_NAMES for s in SYNTHETIC_SHAPES]
# thing_colors for detectron2's Visualizer: the un-jittered colour of each class.
_BASE_RGB = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (40, 70, 230)}
SYNTHETIC_COLORS = [_BASE_RGB[c] for c in SYNTHETIC_COLOR_NAMES for _ in SYNTHETIC_SHAPES]

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
_SPLITS = ("train", "val")
_SUPERSAMPLE = 2  # draw at 2x and average 2x2 blocks: cheap anti-aliasing


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines a synthetic dataset's content (hashed by :meth:`key`).

    Attributes:
        image_size: side of the square images in pixels.
        num_train: images in the train split.
        num_val: images in the val split.
        seed: base seed; image i of split s uses ``default_rng([seed, s, i])``.
        min_objects: fewest labelled objects per image (after occlusion).
        max_objects: most labelled objects placed per image.
        min_size: smallest object extent in pixels.
        max_size: largest object extent in pixels (sizes are log-uniform in between).
        min_distractors: fewest unlabelled distractor items per image.
        max_distractors: most unlabelled distractor items per image.
        min_visible: an object keeps its annotation only if at least this fraction of its
            pixels remains visible after everything painted over it.
    """

    image_size: int = 128
    num_train: int = 3000
    num_val: int = 500
    seed: int = 0
    min_objects: int = 3
    max_objects: int = 12
    min_size: int = 6
    max_size: int = 40
    min_distractors: int = 3
    max_distractors: int = 12
    min_visible: float = 0.4

    def __post_init__(self) -> None:
        """Reject specs that cannot be rendered, before any work is done."""
        problems = []
        if self.image_size < 32:
            problems.append(f"image_size={self.image_size} < 32")
        if self.num_train < 1 or self.num_val < 1:
            problems.append(f"num_train={self.num_train}, num_val={self.num_val} must be >= 1")
        if not 1 <= self.min_objects <= self.max_objects:
            problems.append(
                f"need 1 <= min_objects <= max_objects ({self.min_objects}, " f"{self.max_objects})"
            )
        if not 0 <= self.min_distractors <= self.max_distractors:
            problems.append(
                f"need 0 <= min_distractors <= max_distractors "
                f"({self.min_distractors}, {self.max_distractors})"
            )
        if not 4 <= self.min_size <= self.max_size <= self.image_size // 2:
            problems.append(
                f"need 4 <= min_size <= max_size <= image_size/2 ({self.min_size}, "
                f"{self.max_size}, {self.image_size})"
            )
        if not 0.0 <= self.min_visible <= 1.0:
            problems.append(f"min_visible={self.min_visible} not in [0, 1]")
        if problems:
            raise ValueError("[synthetic] invalid SyntheticSpec: " + "; ".join(problems))

    def key(self) -> str:
        """Return a short stable id of this spec and of the renderer version.

        Used as the cache directory name, and by callers to key anything derived from the data
        (e.g. cached teachers), so a renderer change (DATASET_VERSION bump) invalidates them.

        Returns:
            A string like ``"v1-3f2a9c0d1e7b"``.
        """
        payload = json.dumps({"dataset_version": DATASET_VERSION, **asdict(self)}, sort_keys=True)
        return f"v{DATASET_VERSION}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    def num_images(self, split: str) -> int:
        """Return the number of images in ``split`` ("train" or "val")."""
        return {"train": self.num_train, "val": self.num_val}[_check_split(split)]


BUILTIN_SPECS: dict[str, SyntheticSpec] = {
    "synth": SyntheticSpec(),
    "synth_small": SyntheticSpec(num_train=600, num_val=100),
    "synth_tiny": SyntheticSpec(num_train=16, num_val=8),
}


def _check_split(split: str) -> str:
    """Fail early with the valid choices, rather than with a KeyError deep in rendering."""
    if split not in _SPLITS:
        raise ValueError(f"[synthetic] unknown split {split!r}; expected one of {_SPLITS}")
    return split


# ----------------------------------------------------------------------------------------------
# Colours
# ----------------------------------------------------------------------------------------------


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    """HSV -> RGB in [0, 255] via colorsys (pure Python arithmetic, hence reproducible)."""
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v)
    return np.array([r * 255.0, g * 255.0, b * 255.0], dtype=np.float32)


def _class_color(rng: np.random.Generator, color_name: str) -> np.ndarray:
    """A jittered instance of a labelled colour: hue +-12 deg, varied saturation and brightness."""
    hue = _CLASS_HUES[color_name] + rng.uniform(-_CLASS_HUE_JITTER, _CLASS_HUE_JITTER)
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
    s = float(_SUPERSAMPLE)
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
    n = spec.image_size * _SUPERSAMPLE
    size = math.exp(rng.uniform(math.log(spec.min_size), math.log(spec.max_size))) * _SUPERSAMPLE
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
                size = min(size * 1.6, spec.max_size * 1.5 * _SUPERSAMPLE)
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
    return np.random.default_rng([spec.seed, _SPLITS.index(_check_split(split)), index])


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
    n = spec.image_size * _SUPERSAMPLE
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


# ----------------------------------------------------------------------------------------------
# Cache on disk
# ----------------------------------------------------------------------------------------------


def cache_root(root: str | os.PathLike | None = None) -> pathlib.Path:
    """Resolve the cache root: the argument, else ``$D2KD_CACHE``, else ``~/.cache/d2kd``."""
    if root is not None:
        return pathlib.Path(root).expanduser()
    env = os.environ.get("D2KD_CACHE")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "d2kd"


def dataset_dir(spec: SyntheticSpec, root: str | os.PathLike | None = None) -> pathlib.Path:
    """Return where ``spec``'s dataset lives (or will live) without rendering anything."""
    return cache_root(root) / "synthetic" / spec.key()


def _render_and_save(job: tuple[SyntheticSpec, str, int, str]) -> list[dict]:
    """Pool worker: render one image, write its PNG, return its annotations."""
    spec, split, index, out_dir = job
    image, anns = render_image(spec, split, index)
    Image.fromarray(image, "RGB").save(os.path.join(out_dir, f"{index:06d}.png"))
    return anns


def _coco_json(spec: SyntheticSpec, split: str, per_image: list[list[dict]]) -> dict:
    """Build the COCO dict of a split; ids follow image order, so the json is deterministic."""
    size = spec.image_size
    images, annotations = [], []
    for index, anns in enumerate(per_image):
        image_id = index + 1
        images.append(
            {"id": image_id, "file_name": f"{index:06d}.png", "width": size, "height": size}
        )
        for ann in anns:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0, **ann}
            )
    categories = [
        {"id": k + 1, "name": name, "supercategory": name.split("_")[1]}
        for k, name in enumerate(SYNTHETIC_CLASSES)
    ]
    info = {
        "description": "d2kd synthetic shapes",
        "dataset_version": DATASET_VERSION,
        "spec_key": spec.key(),
        "split": split,
    }
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def _num_workers(num_images: int) -> int:
    """Use a pool of 2 only for big renders, and never inside a daemonic (pool) process."""
    env = os.environ.get("D2KD_RENDER_WORKERS")
    if env:
        return max(1, int(env))
    if num_images < 400 or mp.current_process().daemon:
        return 1
    return min(2, os.cpu_count() or 1)


def _render_into(spec: SyntheticSpec, out: pathlib.Path) -> None:
    """Render every split of ``spec`` into ``out``; spec.json is written last as the marker."""
    (out / "annotations").mkdir(parents=True)
    for split in _SPLITS:
        (out / split).mkdir()
        jobs = [(spec, split, i, str(out / split)) for i in range(spec.num_images(split))]
        workers = _num_workers(len(jobs))
        if workers > 1:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(workers) as pool:
                per_image = pool.map(_render_and_save, jobs, chunksize=32)
        else:
            per_image = [_render_and_save(job) for job in jobs]
        coco = _coco_json(spec, split, per_image)
        with open(out / "annotations" / f"instances_{split}.json", "w") as f:
            json.dump(coco, f, separators=(",", ":"))
    marker = {
        "dataset_version": DATASET_VERSION,
        "key": spec.key(),
        "spec": asdict(spec),
        "classes": SYNTHETIC_CLASSES,
    }
    with open(out / "spec.json", "w") as f:
        json.dump(marker, f, indent=1, sort_keys=True)


def _is_complete(path: pathlib.Path, spec: SyntheticSpec) -> bool:
    """A dataset dir is complete once its spec.json exists; check it names the same spec."""
    marker = path / "spec.json"
    if not marker.is_file():
        return False
    try:
        stored = json.loads(marker.read_text())
    except (OSError, ValueError) as e:
        raise RuntimeError(f"[synthetic] unreadable marker {marker}: {e}; delete {path}") from e
    if stored.get("spec") != asdict(spec) or stored.get("key") != spec.key():
        raise RuntimeError(
            f"[synthetic] {marker} describes a different spec than key "
            f"{spec.key()}; delete {path} to re-render"
        )
    return True


def render_synthetic(spec: SyntheticSpec, root: str | os.PathLike | None = None) -> pathlib.Path:
    """Render ``spec``'s dataset into the cache unless it is already there.

    Safe when several processes (e.g. DDP ranks) call it at once: each renders into its own
    temporary sibling directory and renames it into place; the first rename wins and the others
    discard their copy. Only complete datasets are ever visible under the final name.

    Args:
        spec: the dataset spec.
        root: cache root; see :func:`cache_root`.

    Returns:
        The dataset directory, holding train/, val/, annotations/ and spec.json.
    """
    final = dataset_dir(spec, root)
    if _is_complete(final, spec):
        return final
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # incomplete leftover (only possible if someone tampered): move aside
        stale = parent / f".stale-{spec.key()}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        except FileNotFoundError:
            pass  # another process moved it first
    tmp = parent / f".tmp-{spec.key()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    try:
        _render_into(spec, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final, spec):
                raise
            logger.info("[synthetic] %s was rendered concurrently; discarding our copy", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("[synthetic] rendered %s in %.1fs", final, time.perf_counter() - start)
    return final


# ----------------------------------------------------------------------------------------------
# detectron2 registration
# ----------------------------------------------------------------------------------------------

# dataset name -> (spec, root as given) for the datasets this module registered.
_REGISTERED: dict[str, tuple[SyntheticSpec, str | None]] = {}


def _set_paths(dataset_name: str, directory: pathlib.Path, split: str) -> None:
    """Point the metadata at the rendered files; replace stale paths if the cache root moved."""
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(dataset_name)
    paths = {
        "json_file": str(directory / "annotations" / f"instances_{split}.json"),
        "image_root": str(directory / split),
    }
    for field, value in paths.items():
        if getattr(meta, field, None) != value:
            meta.__dict__.pop(field, None)  # Metadata refuses to overwrite; drop the stale value
            meta.set(**{field: value})


def _load_split(dataset_name: str, spec: SyntheticSpec, split: str, root: str | None) -> list:
    """DatasetCatalog loader: render on first use, then read the COCO json with detectron2."""
    from detectron2.data.datasets import load_coco_json

    directory = render_synthetic(spec, root)
    _set_paths(dataset_name, directory, split)
    return load_coco_json(
        str(directory / "annotations" / f"instances_{split}.json"),
        str(directory / split),
        dataset_name,
    )


def register_synthetic(
    name: str, spec: SyntheticSpec, root: str | os.PathLike | None = None
) -> None:
    """Register ``{name}_train`` and ``{name}_val`` with detectron2, without rendering.

    Rendering happens the first time a split is loaded via ``DatasetCatalog.get``; ``json_file``
    and ``image_root`` are set then (at once if ``root`` is given). Call
    :func:`ensure_registered_rendered` before building a COCOEvaluator on a split that was never
    loaded.

    Args:
        name: dataset name prefix.
        spec: the dataset spec.
        root: cache root; None resolves ``$D2KD_CACHE`` / ``~/.cache/d2kd`` at load time.

    Raises:
        ValueError: if a split name is already registered with another spec or root, or by
            something other than this function.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    root_str = None if root is None else str(root)
    for split in _SPLITS:
        dataset_name = f"{name}_{split}"
        if dataset_name in _REGISTERED:
            old_spec, old_root = _REGISTERED[dataset_name]
            if old_spec == spec and old_root == root_str:
                continue
            raise ValueError(
                f"[synthetic] dataset {dataset_name!r} is already registered with spec key "
                f"{old_spec.key()} (root {old_root}); refusing to re-register it with key "
                f"{spec.key()} (root {root_str})"
            )
        if dataset_name in DatasetCatalog.list():
            raise ValueError(
                f"[synthetic] dataset {dataset_name!r} is already registered by "
                "something other than register_synthetic"
            )
        DatasetCatalog.register(
            dataset_name, functools.partial(_load_split, dataset_name, spec, split, root_str)
        )
        MetadataCatalog.get(dataset_name).set(
            thing_classes=list(SYNTHETIC_CLASSES),
            thing_colors=[list(c) for c in SYNTHETIC_COLORS],
            evaluator_type="coco",
            d2kd_spec_key=spec.key(),
        )
        if root is not None:
            _set_paths(dataset_name, dataset_dir(spec, root), split)
        _REGISTERED[dataset_name] = (spec, root_str)


def ensure_registered_rendered(dataset_name: str) -> pathlib.Path:
    """Render a registered synthetic split and make its metadata paths correct.

    Call before constructing a COCOEvaluator, which reads ``json_file`` at construction.

    Args:
        dataset_name: a split registered by :func:`register_synthetic`, e.g. "synth_val".

    Returns:
        The split's COCO json path.
    """
    if dataset_name not in _REGISTERED:
        raise KeyError(
            f"[synthetic] {dataset_name!r} was not registered by register_synthetic; "
            f"known: {sorted(_REGISTERED)}"
        )
    spec, root = _REGISTERED[dataset_name]
    split = dataset_name.rsplit("_", 1)[1]
    directory = render_synthetic(spec, root)
    _set_paths(dataset_name, directory, split)
    return directory / "annotations" / f"instances_{split}.json"


def register_builtin() -> None:
    """Register the builtin datasets (synth, synth_small, synth_tiny); safe to call twice."""
    for name, spec in BUILTIN_SPECS.items():
        register_synthetic(name, spec)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def _preview(spec: SyntheticSpec, split: str, num: int, out: str, scale: int = 3) -> None:
    """Write a grid of rendered images with boxes and class names, for eyeballing the data."""
    cols = min(num, 4)
    rows = (num + cols - 1) // cols
    cell = spec.image_size * scale
    grid = Image.new("RGB", (cols * (cell + 4), rows * (cell + 4)), (255, 255, 255))
    for i in range(num):
        image, anns = render_image(spec, split, i)
        big = Image.fromarray(image).resize((cell, cell), Image.NEAREST)
        draw = ImageDraw.Draw(big)
        for ann in anns:
            x, y, w, h = (v * scale for v in ann["bbox"])
            name = SYNTHETIC_CLASSES[ann["category_id"] - 1]
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 255, 255))
            draw.text((x + 1, y - 10), name.replace("_", " "), fill=(255, 255, 255))
        grid.paste(big, ((i % cols) * (cell + 4), (i // cols) * (cell + 4)))
    grid.save(out)


def _stats(spec: SyntheticSpec, split: str, num: int) -> str:
    """Summarise object counts and sizes over the first ``num`` images of a split."""
    counts, sides = [], []
    for i in range(num):
        _, anns = render_image(spec, split, i)
        counts.append(len(anns))
        sides += [math.sqrt(a["bbox"][2] * a["bbox"][3]) for a in anns]
    q = np.percentile(sides, [10, 50, 90])
    small = float(np.mean(np.array(sides) < 32))
    return (
        f"{num} {split} images: objects/image mean {np.mean(counts):.2f} "
        f"min {min(counts)} max {max(counts)}; box side sqrt(wh) p10/p50/p90 "
        f"{q[0]:.1f}/{q[1]:.1f}/{q[2]:.1f} px; {small:.0%} under 32 px"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m d2kd.data.synthetic``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="synth", choices=sorted(BUILTIN_SPECS))
    parser.add_argument("--preview", metavar="OUT_PNG", help="write a grid of annotated images")
    parser.add_argument("--split", default="val", choices=_SPLITS)
    parser.add_argument("--num", type=int, default=8)
    parser.add_argument("--render", action="store_true", help="render the dataset into the cache")
    parser.add_argument("--stats", type=int, metavar="N", help="print statistics of N images")
    parser.add_argument("--root", help="cache root (default $D2KD_CACHE or ~/.cache/d2kd)")
    args = parser.parse_args(argv)
    spec = BUILTIN_SPECS[args.dataset]
    if not (args.preview or args.render or args.stats):
        parser.error("nothing to do: pass --preview, --render and/or --stats")
    if args.preview:
        _preview(spec, args.split, args.num, args.preview)
        print(f"wrote {args.preview}")
    if args.stats:
        print(_stats(spec, args.split, args.stats))
    if args.render:
        start = time.perf_counter()
        path = render_synthetic(spec, args.root)
        print(f"{path} ({time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    main()
