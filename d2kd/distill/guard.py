"""Stop training at the first non-finite loss, naming the term and level that produced it."""

import math
from typing import Dict

import torch
from torch import Tensor

__all__ = ["check_finite"]


def check_finite(losses: Dict[str, Tensor], iteration: int) -> None:
    """Raise FloatingPointError listing every non-finite loss.

    One host sync per iteration (a single stacked ``isfinite``), paid before backward so no
    optimizer step ever sees a NaN. Keys name the method and level (``loss_fgd_p3``), so the
    message says which term failed.
    """
    if not losses:
        return
    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
    if bool(torch.isfinite(values).all()):
        return
    bad = {k: v for k, v in zip(losses, values.tolist()) if not math.isfinite(v)}
    raise FloatingPointError(
        f"[NonFiniteGuard] non-finite loss at iteration {iteration}: "
        + ", ".join(f"{k}={v}" for k, v in bad.items())
    )
