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

One module per job: :mod:`.spec` (classes, :class:`SyntheticSpec` and its cache key),
:mod:`.render` (one image in memory), :mod:`.cache` (the on-disk dataset, published atomically),
:mod:`.register` (Detectron2 catalogs, lazily) and :mod:`.cli` (``python -m
d2kd.data.synthetic --preview/--render/--stats``).
"""

from .cache import cache_root, dataset_dir, render_synthetic
from .cli import main
from .register import ensure_registered_rendered, register_builtin, register_synthetic
from .render import PlacedItem, compose_scene, rasterize_shape, render_image
from .spec import (
    BUILTIN_SPECS,
    DATASET_VERSION,
    SYNTHETIC_CLASSES,
    SYNTHETIC_COLOR_NAMES,
    SYNTHETIC_COLORS,
    SYNTHETIC_SHAPES,
    SyntheticSpec,
)

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
    "PlacedItem",
    "compose_scene",
    "rasterize_shape",
    "main",
]
