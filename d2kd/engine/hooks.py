"""Training hooks d2kd adds to Detectron2's trainers."""

import torch
from detectron2.engine import HookBase

__all__ = ["GradientClipping"]


class GradientClipping(HookBase):
    """Clip the global gradient norm after backward, before the optimizer step.

    The KD recipes of FGD and LSHFM clip at ``max_norm=35`` as their official configs do.
    Under AMP the gradients are unscaled first, so the norm is that of the true gradients.

    Args:
        max_norm: the largest allowed total L2 norm.
    """

    def __init__(self, max_norm: float):
        if max_norm <= 0:
            raise ValueError(f"[GradientClipping] max_norm must be > 0, got {max_norm}")
        self.max_norm = float(max_norm)

    def after_backward(self) -> None:
        trainer = self.trainer
        scaler = getattr(trainer, "grad_scaler", None)
        if scaler is not None and scaler.is_enabled():
            scaler.unscale_(trainer.optimizer)
        params = [
            p for g in trainer.optimizer.param_groups for p in g["params"] if p.grad is not None
        ]
        torch.nn.utils.clip_grad_norm_(params, self.max_norm)
