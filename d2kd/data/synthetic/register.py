"""Detectron2 registration of synthetic datasets: lazy, so nothing renders until first loaded.

``COCOEvaluator`` reads ``MetadataCatalog.get(name).json_file`` when it is constructed. When the
cache root is not fixed at registration, ``json_file``/``image_root`` are set the first time the
dataset is loaded, so load the dataset (detectron2's trainers build the test loader before the
evaluator) or call :func:`ensure_registered_rendered` before building the evaluator.
"""

from __future__ import annotations

import functools
import os
import pathlib

from .cache import dataset_dir, render_synthetic
from .spec import BUILTIN_SPECS, SPLITS, SYNTHETIC_CLASSES, SYNTHETIC_COLORS, SyntheticSpec

__all__ = ["register_synthetic", "register_builtin", "ensure_registered_rendered"]

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
    for split in SPLITS:
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
