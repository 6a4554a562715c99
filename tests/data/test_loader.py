"""The resumable training loader: any start iteration continues the same stream exactly."""

import itertools

import numpy as np
import torch

from d2kd.data.loader import ResumableBatchStream, build_resumable_train_loader


def noisy_mapper(d):
    """A mapper whose output depends on the host RNGs, like random augmentations."""
    return (d["id"], float(np.random.rand()), int(torch.randint(0, 1000, (1,))) >= 0)


DATA = [{"id": i} for i in range(10)]


def batches(start=0, workers=0, n=6, bs=3):
    loader = build_resumable_train_loader(
        DATA, mapper=noisy_mapper, total_batch_size=bs, num_workers=workers, seed=5
    )
    loader.set_start_iter(start)
    return [tuple(x[:2] for x in b) for b in itertools.islice(iter(loader), n)]


def test_resume_continues_the_same_stream_with_the_same_augmentation():
    full = batches(0, n=8)
    assert batches(5, n=3) == full[5:8]


def test_workers_do_not_change_the_stream():
    assert batches(0, workers=2, n=5) == batches(0, workers=0, n=5)
    assert batches(3, workers=2, n=3) == batches(0, n=6)[3:6]


def test_every_sample_once_per_epoch_and_epochs_differ():
    stream = ResumableBatchStream(DATA, None, batch_size=5, seed=1)
    epoch0 = [stream.index_at(p) for p in range(10)]
    epoch1 = [stream.index_at(p) for p in range(10, 20)]
    assert sorted(epoch0) == list(range(10)) == sorted(epoch1) and epoch0 != epoch1


def test_ranks_take_disjoint_slices():
    r0 = ResumableBatchStream(DATA, None, batch_size=2, seed=0, rank=0, world_size=2)
    r1 = ResumableBatchStream(DATA, None, batch_size=2, seed=0, rank=1, world_size=2)
    seen = r0.batch_positions(0) + r1.batch_positions(0) + r0.batch_positions(1)
    assert seen == [0, 1, 2, 3, 4, 5]


def test_host_rng_state_is_restored():
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    next(iter(build_resumable_train_loader(DATA, mapper=noisy_mapper, total_batch_size=2)))
    assert np.random.rand() == expected
