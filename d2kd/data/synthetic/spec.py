"""What a synthetic dataset is: its classes, its spec (hashed into the cache key) and splits.

Kept apart from rendering so that the cache key (:meth:`SyntheticSpec.key`) can be read, and
specs compared, without importing PIL or drawing anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

__all__ = [
    "DATASET_VERSION",
    "SYNTHETIC_SHAPES",
    "SYNTHETIC_COLOR_NAMES",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_COLORS",
    "CLASS_HUES",
    "SPLITS",
    "SyntheticSpec",
    "BUILTIN_SPECS",
    "check_split",
]

# Bump whenever a change alters any rendered pixel or annotation: it is part of spec.key(), so
# cached datasets (and teachers keyed by it) are never silently reused across renderers.
DATASET_VERSION = 1

SYNTHETIC_SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
# Base hue in degrees of each labelled colour.
CLASS_HUES = {"red": 0.0, "green": 120.0, "blue": 230.0}
SYNTHETIC_COLOR_NAMES = tuple(CLASS_HUES)
# Category id k+1 is SYNTHETIC_CLASSES[k] (COCO ids are 1-based; detectron2 maps them to 0..K-1).
SYNTHETIC_CLASSES = [f"{c}_{s}" for c in SYNTHETIC_COLOR_NAMES for s in SYNTHETIC_SHAPES]
# thing_colors for detectron2's Visualizer: the un-jittered colour of each class.
_BASE_RGB = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (40, 70, 230)}
SYNTHETIC_COLORS = [_BASE_RGB[c] for c in SYNTHETIC_COLOR_NAMES for _ in SYNTHETIC_SHAPES]

SPLITS = ("train", "val")


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
        return {"train": self.num_train, "val": self.num_val}[check_split(split)]


BUILTIN_SPECS: dict[str, SyntheticSpec] = {
    "synth": SyntheticSpec(),
    "synth_small": SyntheticSpec(num_train=600, num_val=100),
    "synth_tiny": SyntheticSpec(num_train=16, num_val=8),
}


def check_split(split: str) -> str:
    """Fail early with the valid choices, rather than with a KeyError deep in rendering."""
    if split not in SPLITS:
        raise ValueError(f"[synthetic] unknown split {split!r}; expected one of {SPLITS}")
    return split
