"""A training loader whose data order can resume at any iteration.

Detectron2's ``TrainingSampler`` restarts its shuffled stream from the beginning after
``--resume``, and augmentations draw from per-worker RNGs, so a resumed run sees other batches
than an uninterrupted one. Here the stream is a pure function of (seed, position):

* the global sample order is one seeded permutation per epoch, so the sample at any position is
  computed directly (no replay);
* batch ``k`` is positions ``[k*B*W + r*B, ...)`` for rank ``r`` of ``W`` ranks and per-rank batch
  size ``B``; DataLoader worker ``w`` makes the batches ``k`` with ``k % num_workers == w``, which
  the DataLoader returns in order;
* each sample is mapped under NumPy/Python RNGs seeded from (seed, position), so random
  augmentations do not depend on workers or restarts.

``set_start_iter(i)`` before the first batch makes batch ``i`` come first. Images are batched
as they come (no aspect-ratio grouping), which suits fixed-size data; for COCO, Detectron2's
``build_detection_train_loader`` remains usable, at the cost of an inexact resume.

A sample that cannot be read (PIL's bare ``OSError: image file is truncated``, a missing file)
stops training with a :class:`SampleReadError` naming the file and its registered dataset, so
the bad file can be found among millions without a debugger.
"""

import copy
import os
import random
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from detectron2.utils import comm
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

__all__ = [
    "ResumableBatchStream",
    "build_resumable_train_loader",
    "ResumableTrainLoader",
    "SampleReadError",
    "datasets_holding",
]


class SampleReadError(OSError):
    """A training sample's file could not be read; the message names the file and dataset."""


def datasets_holding(file_name: str) -> List[str]:
    """Registered datasets whose image folder (``image_root``, VOC's ``dirname``) holds a file,
    the innermost folder only.

    Dataset dicts do not record their dataset, so error messages find it from the metadata.
    Only the datasets with the deepest matching folder are named: with Detectron2's builtin
    registrations every LVIS split's ``coco/`` holds each ``coco/train2017`` image too.
    """
    from detectron2.data import MetadataCatalog

    path = os.path.abspath(file_name)
    found = {}
    for name in MetadataCatalog.list():
        meta = MetadataCatalog.get(name)
        for field in ("image_root", "dirname"):
            root = getattr(meta, field, None)
            if isinstance(root, str) and root and path.startswith(os.path.abspath(root) + os.sep):
                found[name] = len(os.path.abspath(root))
                break
    deepest = max(found.values(), default=0)
    return [name for name, depth in found.items() if depth == deepest]


@contextmanager
def _seeded_host_rngs(seed: int):
    """Seed NumPy's and Python's global RNGs for one sample, restoring them afterwards."""
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed % (2**32))
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


class ResumableBatchStream(IterableDataset):
    """An infinite stream of mapped batches (lists of dicts) for one rank.

    Args:
        dataset: the dataset dicts (Detectron2 format).
        mapper: callable from a dataset dict to a model input dict; None keeps the dict.
        batch_size: images per batch on this rank.
        seed: seed of the shuffle and of per-sample augmentation RNGs; equal on every rank.
        shuffle: shuffle each epoch.
        rank: this process's rank; world_size: number of ranks.
    """

    def __init__(
        self,
        dataset: Sequence[Dict[str, Any]],
        mapper: Optional[Callable[[Dict[str, Any]], Any]],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(dataset) == 0:
            raise ValueError("[ResumableBatchStream] the training dataset is empty")
        self.dataset = list(dataset)
        self.mapper = mapper
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.start_batch = 0
        self._perm_epoch = -1
        self._perm: Optional[np.ndarray] = None

    def index_at(self, position: int) -> int:
        """Dataset index of the sample at a global stream position."""
        n = len(self.dataset)
        epoch, offset = divmod(position, n)
        if not self.shuffle:
            return offset
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._perm_epoch = epoch
        return int(self._perm[offset])

    def batch_positions(self, batch: int) -> List[int]:
        """Global stream positions of this rank's ``batch``-th batch."""
        first = (batch * self.world_size + self.rank) * self.batch_size
        return list(range(first, first + self.batch_size))

    def make_batch(self, batch: int) -> List[Any]:
        out = []
        for pos in self.batch_positions(batch):
            index = self.index_at(pos)
            item = copy.deepcopy(self.dataset[index])
            if self.mapper is not None:
                with _seeded_host_rngs(self.seed * 1_000_003 + pos):
                    item = self._map(item, index)
            out.append(item)
        return out

    def _map(self, item: Any, index: int) -> Any:
        """The mapper's output; a failure names the sample's file and dataset."""
        try:
            return self.mapper(item)
        except OSError as e:
            raise SampleReadError(
                f"[ResumableBatchStream] cannot read {self._describe(item, index)}: "
                f"{type(e).__name__}: {e}"
            ) from e
        except Exception as e:  # keep the type (a ValueError stays one), add where it happened
            e.add_note(f"[ResumableBatchStream] while mapping {self._describe(item, index)}")
            raise

    @staticmethod
    def _describe(item: Any, index: int) -> str:
        if not isinstance(item, dict) or "file_name" not in item:
            return f"dataset item {index}"
        names = datasets_holding(item["file_name"])
        if names:
            dataset = "dataset " + ", ".join(repr(n) for n in names)
        else:
            dataset = "dataset unknown: no registered image_root holds it"
        image_id = item.get("image_id", "?")
        return f"{item['file_name']} ({dataset}; item {index}, image_id {image_id})"

    def __iter__(self) -> Iterator[List[Any]]:
        info = get_worker_info()
        num_workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        batch = self.start_batch + worker
        while True:
            yield self.make_batch(batch)
            batch += num_workers


class ResumableTrainLoader(DataLoader):
    """A DataLoader over a :class:`ResumableBatchStream` that can start at any iteration."""

    def set_start_iter(self, iteration: int) -> None:
        """Make the next iterator start with batch ``iteration`` (call before iterating)."""
        self.dataset.start_batch = int(iteration)


def _identity_collate(batch):
    return batch


def build_resumable_train_loader(
    dataset: Sequence[Dict[str, Any]],
    *,
    mapper: Optional[Callable] = None,
    total_batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    stream_cls: type = None,
) -> ResumableTrainLoader:
    """Build the training loader, mirroring ``build_detection_train_loader``'s arguments.

    Args:
        dataset: dataset dicts (e.g. from ``get_detection_dataset_dicts``).
        mapper: e.g. a Detectron2 ``DatasetMapper``.
        total_batch_size: images per iteration over all ranks; must divide by the world size.
        num_workers: DataLoader worker processes.
        seed: shuffle and augmentation seed (same on all ranks).
        shuffle: shuffle each epoch.
        stream_cls: the batch stream (default :class:`ResumableBatchStream`; a subclass may
            tell the mapper more, e.g. IKD's iteration-aware stream).
    """
    world = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world != 0:
        raise ValueError(
            f"[ResumableTrainLoader] total_batch_size={total_batch_size} must be a positive "
            f"multiple of the number of processes ({world})"
        )
    stream = (stream_cls or ResumableBatchStream)(
        dataset, mapper, total_batch_size // world, seed, shuffle, comm.get_rank(), world
    )
    return ResumableTrainLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_identity_collate,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
    )
