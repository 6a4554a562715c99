"""Plain feature mimicking: mean squared error between student and teacher maps."""

from torch import Tensor

__all__ = ["feature_mse"]


def feature_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """Element-mean squared error, computed in fp32.

    Args:
        student: (N, C, H, W) student map, already adapted to the teacher's channels.
        teacher: (N, C, H, W) teacher map; treated as a constant (detached).

    Returns:
        A scalar: mean over all N*C*H*W elements of (student - teacher)^2.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"[feature_mse] shapes differ: student {tuple(student.shape)} vs teacher "
            f"{tuple(teacher.shape)}"
        )
    diff = student.float() - teacher.detach().float()
    return diff.pow(2).mean()
