"""The on-disk cache of rendered datasets: ``<root>/synthetic/<spec.key()>/``.

A dataset directory holds ``train/``, ``val/`` (PNGs), ``annotations/instances_<split>.json``
(COCO) and ``spec.json``. It is rendered into a temporary sibling and renamed into place, so only
complete datasets are ever visible under the final name, even with several processes (DDP ranks)
rendering at once. ``root`` defaults to ``$D2KD_CACHE`` or ``~/.cache/d2kd``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import pathlib
import shutil
import time
import uuid
from dataclasses import asdict
from typing import Callable, Optional

from PIL import Image

from ...utils.files import cache_root
from .render import render_image
from .spec import DATASET_VERSION, SPLITS, SYNTHETIC_CLASSES, SyntheticSpec

__all__ = ["cache_root", "dataset_dir", "render_synthetic"]

logger = logging.getLogger("d2kd.data.synthetic")

Progress = Optional[Callable[[int, int], None]]


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


def _render_into(spec: SyntheticSpec, out: pathlib.Path, progress: Progress = None) -> None:
    """Render every split of ``spec`` into ``out``; spec.json is written last as the marker."""
    (out / "annotations").mkdir(parents=True)
    total = sum(spec.num_images(split) for split in SPLITS)
    done = 0
    for split in SPLITS:
        (out / split).mkdir()
        jobs = [(spec, split, i, str(out / split)) for i in range(spec.num_images(split))]
        workers = _num_workers(len(jobs))
        per_image = []
        with contextlib.ExitStack() as stack:
            if workers > 1:
                ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
                pool = stack.enter_context(ctx.Pool(workers))
                results = pool.imap(_render_and_save, jobs, chunksize=32)
            else:
                results = map(_render_and_save, jobs)
            for anns in results:
                per_image.append(anns)
                done += 1
                if progress is not None:
                    progress(done, total)
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


def render_synthetic(
    spec: SyntheticSpec, root: str | os.PathLike | None = None, progress: Progress = None
) -> pathlib.Path:
    """Render ``spec``'s dataset into the cache unless it is already there.

    Safe when several processes (e.g. DDP ranks) call it at once: each renders into its own
    temporary sibling directory and renames it into place; the first rename wins and the others
    discard their copy. Only complete datasets are ever visible under the final name.

    Args:
        spec: the dataset spec.
        root: cache root; see :func:`d2kd.utils.files.cache_root`.
        progress: called as ``progress(images_done, images_total)`` while rendering.

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
        _render_into(spec, tmp, progress)
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
