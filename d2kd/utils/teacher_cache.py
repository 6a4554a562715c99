"""Where trained synthetic teachers are cached, keyed by what determines them.

The quickstart and the benchmark suites share one cache: a teacher trained by either is reused
by both. The key hashes the resolved recipe (minus keys that do not change the weights: output
folder, evaluation and logging periods, checkpoint period, device) and the synthetic dataset's
spec key, so a change to either trains a new teacher instead of reusing a stale one.
"""

import hashlib
from pathlib import Path
from typing import Sequence

from .files import cache_root

__all__ = ["cache_root", "teacher_cache_dir", "IGNORED_TRAIN_KEYS"]

IGNORED_TRAIN_KEYS = (
    "output_dir",
    "eval_period",
    "log_period",
    "checkpointer",
    "device",
    "teacher_check",
    "unsafe_load",
)


def teacher_cache_dir(recipe: str, overrides: Sequence[str] = ()) -> Path:
    """The cache folder of the teacher a recipe (plus overrides) trains.

    Args:
        recipe: path of the teacher's LazyConfig recipe.
        overrides: ``key=value`` overrides that change the teacher (e.g. a scaled max_iter).
    """
    from detectron2.config import LazyConfig
    from detectron2.data import MetadataCatalog

    import d2kd.data  # noqa: F401  (registers the synthetic datasets)
    from d2kd.data.synthetic import SyntheticSpec

    from ..config import apply_overrides

    cfg = apply_overrides(LazyConfig.load(str(recipe)), list(overrides), owner="teacher cache")
    for key in IGNORED_TRAIN_KEYS:
        cfg.train.pop(key, None)
    text = LazyConfig.to_py(cfg)
    meta = MetadataCatalog.get(cfg.dataloader.train.dataset.names)
    spec_key = getattr(meta, "d2kd_spec_key", None) or SyntheticSpec().key()
    digest = hashlib.sha256((text + spec_key).encode()).hexdigest()[:12]
    stem = Path(recipe).stem
    return cache_root() / "teachers" / f"{stem}-{spec_key}-{digest}"
