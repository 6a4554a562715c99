"""Which detector family a model belongs to: the one rule every part of d2kd uses.

Dense (one-stage) detectors are Detectron2's ``DenseDetector`` subclasses (RetinaNet, FCOS):
one head over FPN levels, outputs per anchor or location. Two-stage detectors are
``GeneralizedRCNN`` (an RPN and RoI heads). Anything else is refused with a message naming it.
"""

from typing import Literal

from torch import nn

__all__ = ["detector_family", "is_dense", "is_rcnn", "Family"]

Family = Literal["dense", "rcnn"]


def is_dense(model: nn.Module) -> bool:
    """A Detectron2 ``DenseDetector`` (RetinaNet, FCOS, or a subclass)."""
    from detectron2.modeling.meta_arch.dense_detector import DenseDetector

    return isinstance(model, DenseDetector)


def is_rcnn(model: nn.Module) -> bool:
    """A Detectron2 ``GeneralizedRCNN`` with a proposal generator (Faster/Mask R-CNN)."""
    from detectron2.modeling.meta_arch.rcnn import GeneralizedRCNN

    return isinstance(model, GeneralizedRCNN) and getattr(model, "proposal_generator", None) is not None


def detector_family(model: nn.Module, owner: str = "d2kd") -> Family:
    """``"dense"`` or ``"rcnn"``.

    Raises:
        TypeError: naming the model's class when it is neither.
    """
    if is_dense(model):
        return "dense"
    if is_rcnn(model):
        return "rcnn"
    raise TypeError(
        f"[{owner}] {type(model).__name__} is neither a Detectron2 DenseDetector (RetinaNet, "
        "FCOS) nor a GeneralizedRCNN with a proposal generator"
    )
