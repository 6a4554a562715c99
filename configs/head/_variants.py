# Edits shared by HEAD's recipes (a helper module, not a recipe: tests skip files starting "_").
import copy

from detectron2.config import LazyCall as L

from d2kd.distill import LinearWarmup

from ..common.models.retinanet_mbv2 import model as _mbv2_retinanet


def assistant_only(model) -> None:
    """The "Assist" ablation row, in place: the assistant alone, trained with its own detection
    losses; no teacher at all (no AKD, CKD or weight transfer), as the official assist config."""
    model.teacher = None
    model.terms.head.update(akd=False, ckd=None, init_from_teacher=False)
    model.weights = {}


def without_ckd(model) -> None:
    """The "HEAD_dag" ablation row, in place: assistant + AKD, no CKD."""
    model.terms.head.ckd = None
    model.weights.pop("loss_ckd")


def tf_head(model, warmup_iters: int) -> None:
    """TF-HEAD, in place: no teacher; CKD regresses the cls-tower feature at each proposal's
    anchor onto the student's own assistant fc7 (detached). The official code is unreleased; as
    its exploratory `dev` branch: a per-anchor adapter, weight 1.3, and the assistant's losses
    and CKD both warmed up (2000 iterations on COCO), no early stop of CKD."""
    assistant_only(model)
    model.terms.head.update(ckd="assistant", per_anchor=True)
    model.weights = {
        "loss_assist": L(LinearWarmup)(weight=1.0, warmup_iters=warmup_iters),
        "loss_ckd": L(LinearWarmup)(weight=1.3, warmup_iters=warmup_iters),
    }


def mobilenetv2_student():
    """The paper's MobileNetV2 RetinaNet student, set up for torchvision's ImageNet weights."""
    student = copy.deepcopy(_mbv2_retinanet)
    student.pixel_std = [57.375, 57.120, 58.395]  # torchvision's ImageNet weights (BGR order)
    # HEAD's mmdet MobileNetV2: LeakyReLU(0.1), BN in training mode (mmdet's norm_eval=False).
    student.backbone.bottom_up.activation = "leaky_relu"
    return student
