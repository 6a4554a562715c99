# Edits shared by HEAD's recipes (a helper module, not a recipe: tests skip files starting "_").
import copy

from ..common.models.retinanet_mbv2 import model as _mbv2_retinanet


def assistant_only(model) -> None:
    """The "Assist" ablation row, in place: the assistant alone, trained with its own detection
    losses; no teacher at all (no AKD, CKD or weight transfer), as the official assist config."""
    model.teacher = None
    model.terms = {"assist": model.terms["assist"]}
    model.terms["assist"].init_from_teacher = False
    model.weights = {"assist": 1.0}


def mobilenetv2_student():
    """The paper's MobileNetV2 RetinaNet student, set up for torchvision's ImageNet weights."""
    student = copy.deepcopy(_mbv2_retinanet)
    student.pixel_std = [57.375, 57.120, 58.395]  # torchvision's ImageNet weights (BGR order)
    # HEAD's mmdet MobileNetV2: LeakyReLU(0.1), BN in training mode (mmdet's norm_eval=False).
    student.backbone.bottom_up.activation = "leaky_relu"
    return student
