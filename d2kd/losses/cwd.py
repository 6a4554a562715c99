"""CWD: channel-wise distillation (Shu et al., ICCV 2021, arXiv 2011.13256).

Each channel of a feature map becomes a distribution over its H*W locations,
``phi(y)_c = softmax(y_c / tau)``, and the student's is pulled towards the teacher's by the
Kullback-Leibler divergence, averaged over channels and scaled by ``tau^2`` (the paper's Eq. 3 and
4). The official detection code also averages over the batch; so does :func:`cwd_loss`.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cwd_loss"]


def cwd_loss(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """Channel-wise KL divergence of the spatial distributions of two feature maps, in fp32.

    With ``p_t = softmax(teacher[n, c] / tau)`` and ``p_s = softmax(student[n, c] / tau)`` over the
    H*W locations of each image n and channel c::

        loss = tau^2 / (N * C) * sum_{n, c} sum_{i < H*W} p_t[i] * (log p_t[i] - log p_s[i])

    Equal maps give 0. Only the student receives a gradient; the teacher map is a constant.
    The official detection code sums ``-p_t log p_s`` instead (the cross-entropy): it differs
    from this KL by the teacher's entropy, a constant, so the gradients are the same.

    Args:
        student: (N, C, H, W) student map, already adapted to the teacher's channels; any float
            dtype (computed in fp32 with autocast off).
        teacher: (N, C, H, W) teacher map; detached here.
        tau: softmax temperature, > 0 (the official detection configs: 1.0).

    Returns:
        A scalar: the mean over the N*C channels of the per-channel KL(p_t || p_s), times tau^2.

    Raises:
        ValueError: naming the shapes when the maps are not 4-D or differ, or when tau <= 0.
    """
    if student.dim() != 4 or student.shape != teacher.shape:
        raise ValueError(
            "[cwd_loss] expected student and teacher maps of the same shape (N, C, H, W); got "
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)}"
        )
    if not tau > 0:
        raise ValueError(f"[cwd_loss] tau must be > 0, got {tau}")
    with torch.autocast(device_type=student.device.type, enabled=False):
        log_p_s = F.log_softmax(student.float().flatten(2) / tau, dim=2)  # (N, C, H*W)
        log_p_t = F.log_softmax(teacher.detach().float().flatten(2) / tau, dim=2)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=2)  # (N, C)
        return kl.mean() * (tau * tau)
