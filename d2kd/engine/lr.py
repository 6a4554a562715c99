"""Learning-rate multipliers expressed against ``train.max_iter``, so shortening a run keeps its shape."""

from typing import Sequence

from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

__all__ = ["warmup_multistep"]


def warmup_multistep(
    max_iter: int,
    steps: Sequence[float] = (0.75, 0.9),
    warmup_iters: int = 100,
    warmup_factor: float = 0.001,
    gamma: float = 0.1,
) -> WarmupParamScheduler:
    """Linear warm-up, then x``gamma`` at each fraction of ``max_iter`` in ``steps``.

    Args:
        max_iter: total iterations (use ``"${train.max_iter}"`` in recipes).
        steps: decay points as fractions of max_iter (Detectron2's 1x: about 0.67 and 0.89).
        warmup_iters: warm-up length in iterations (clipped to max_iter).
        warmup_factor: starting multiplier of the warm-up.
        gamma: decay factor per step.
    """
    max_iter = max(int(max_iter), 1)
    milestones = sorted({max(1, min(max_iter - 1, int(round(s * max_iter)))) for s in steps})
    milestones = [m for m in milestones if 0 < m < max_iter]
    values = [gamma**i for i in range(len(milestones) + 1)]
    sched = MultiStepParamScheduler(values=values, milestones=milestones, num_updates=max_iter)
    return WarmupParamScheduler(sched, warmup_factor, min(warmup_iters / max_iter, 1.0))
