"""HEAD's distillation losses on RoI features (Wang et al., ECCV 2022, arXiv 2207.05345).

AKD matches the assistant's fc6/fc7 (through linear adapters) to the teacher's on the same RoIs;
CKD matches the student's classification-tower feature at each proposal's source anchor
(through a linear adapter) to the teacher's fc7. Both are element-mean squared errors, as the
official code's ``F.mse_loss(reduction="mean")``.
"""

from typing import Sequence

from torch import Tensor

__all__ = ["roi_mse", "akd_loss", "ckd_loss"]


def roi_mse(student: Tensor, target: Tensor) -> Tensor:
    """Element-mean squared error between RoI feature rows, in fp32; the target is a constant.

    Args:
        student: (R, D) adapted student features.
        target: (R, D) teacher (or, for TF-HEAD, detached assistant) features.

    Returns:
        A scalar: mean over R*D of (student - target)^2; 0 (still connected to ``student``)
        when R is 0, where a mean would be NaN.
    """
    if student.shape != target.shape:
        raise ValueError(
            f"[roi_mse] shapes differ: student {tuple(student.shape)} vs target "
            f"{tuple(target.shape)}"
        )
    if student.numel() == 0:
        return student.float().sum() * 0.0
    return (student.float() - target.detach().float()).pow(2).mean()


def akd_loss(adapted: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Assistant KD: sum over fc layers of :func:`roi_mse`.

    Args:
        adapted: the assistant's pre-ReLU fc outputs after their adapters, each (R, D_t).
        teacher: the teacher's pre-ReLU fc outputs on the same RoIs, each (R, D_t).
    """
    if len(adapted) != len(teacher):
        raise ValueError(f"[akd_loss] {len(adapted)} student fc layers vs {len(teacher)}")
    return sum(roi_mse(s, t) for s, t in zip(adapted, teacher))


def ckd_loss(adapted: Tensor, target: Tensor) -> Tensor:
    """Cross-architecture KD: :func:`roi_mse` of adapted tower features (M, D) vs fc7 (M, D)."""
    return roi_mse(adapted, target)
