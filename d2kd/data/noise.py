"""The training "data" of data-free distillation: seeded Gaussian noise, never an image.

DFAD trains the student on images a generator makes from noise ``z ~ N(0, I)``; the loader's
only job is to hand the trainer that noise. Each iteration's noise is a pure function of
(seed, rank, iteration), so ranks draw different noise under DDP and ``--resume`` continues the
same stream without replaying it.
"""

from typing import Iterator

import torch
from detectron2.utils import comm

__all__ = ["NoiseLoader"]


class NoiseLoader:
    """An infinite iterable of noise batches, one per training iteration.

    Each item is a tensor of shape (draws, B, nz): ``draws`` independent batches of ``B`` noise
    vectors (DFAD draws a fresh ``z`` for each of its k student steps and for the generator
    step, so ``draws = k + 1``), where B is the per-rank batch size.

    Args:
        total_batch_size: noise vectors per draw over all ranks (divisible by the world size).
        nz: noise size (the generator's input).
        draws: noise batches per iteration (k student steps + 1 generator step).
        seed: stream seed; rank r draws from its own stream.
    """

    def __init__(
        self,
        total_batch_size: int,
        nz: int,
        draws: int = 1,
        seed: int = 0,
    ):
        world = comm.get_world_size()
        if total_batch_size <= 0 or total_batch_size % world:
            raise ValueError(
                f"[NoiseLoader] total_batch_size={total_batch_size} must be a positive multiple "
                f"of the number of processes ({world})"
            )
        if draws < 1 or nz < 1:
            raise ValueError(f"[NoiseLoader] draws ({draws}) and nz ({nz}) must be >= 1")
        self.batch_size = total_batch_size // world
        self.nz, self.draws, self.seed = int(nz), int(draws), int(seed)
        self.rank = comm.get_rank()
        self.start_iter = 0

    def set_start_iter(self, iteration: int) -> None:
        """Make the next iterator start at ``iteration`` (the trainer calls it on resume)."""
        self.start_iter = int(iteration)

    def noise_at(self, iteration: int) -> torch.Tensor:
        """The (draws, B, nz) noise of one iteration on this rank."""
        key = (self.seed * 1_000_003 + self.rank) * 1_000_000_007 + int(iteration)
        gen = torch.Generator().manual_seed(key % 2**63)
        return torch.randn(self.draws, self.batch_size, self.nz, generator=gen)

    def __iter__(self) -> Iterator[torch.Tensor]:
        it = self.start_iter
        while True:
            yield self.noise_at(it)
            it += 1
