"""IKD's adversarial feature loss: plain summed squared error per image, no mask, no attention."""

from torch import Tensor

__all__ = ["adversarial_feature_loss"]


def adversarial_feature_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """``sum((F_s - F_t)^2) / N`` on one FPN level of the adversarial images (IKD's AdvFeatureLoss).

    The official ``mse`` variant: ``MSELoss(reduction="sum") / N``, computed in fp32. Unlike
    :func:`d2kd.losses.feature.feature_mse` it is not averaged over C*H*W, which is why the
    paper's weight is small (1e-5 for RetinaNet).

    Args:
        student: (N, C, H, W) student map on the adversarial images, adapted to C_t channels.
        teacher: (N, C, H, W) teacher map on the same images; treated as a constant.

    Returns:
        A scalar.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"[adversarial_feature_loss] shapes differ: student {tuple(student.shape)} vs "
            f"teacher {tuple(teacher.shape)}"
        )
    diff = student.float() - teacher.detach().float()
    return diff.pow(2).sum() / max(student.shape[0], 1)
