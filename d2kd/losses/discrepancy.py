"""DFAD's model discrepancy (Fang et al., "Data-Free Adversarial Distillation", arXiv 1912.11006)
and what makes it learn on detectors.

The student minimises the mean absolute difference between its raw (pre-activation) outputs
and the teacher's on generated images; the generator maximises the same quantity. For dense
outputs (segmentation in the paper, detection here) the generator's objective is
``-log(1 + L1)``, whose gradient stays bounded when the discrepancy is large.

On a detector almost every anchor is background (about 0.5% of RetinaNet's anchors overlap an
object on the synthetic data), and box deltas are never trained there: the official all-anchor
mean is mostly noise the teacher never learned. The foreground-aware form weights each anchor's
class distance by the teacher's confidence (:func:`weighted_cls_discrepancy`) and compares box
deltas only where the teacher is confident (:func:`masked_box_discrepancy`). The image prior
:func:`bn_statistics_loss` pulls generated images towards the statistics the teacher saw.
"""

from typing import Dict, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "mean_l1",
    "dfad_discrepancy",
    "generator_loss",
    "foreground_weights",
    "weighted_cls_discrepancy",
    "masked_box_discrepancy",
    "bn_statistics_loss",
    "CLS_DISTANCES",
]


def mean_l1(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean absolute difference over every element (DFAD's ``F.l1_loss``).

    Args:
        student, teacher: tensors of the same shape, e.g. (N, ΣHWA, K) class logits.

    Returns:
        a scalar, ``mean |student - teacher|``.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"[mean_l1] student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ"
        )
    return (student - teacher).abs().mean()


def dfad_discrepancy(
    student: Mapping[str, Tensor], teacher: Mapping[str, Tensor], prefix: str = "loss_dfad_"
) -> Dict[str, Tensor]:
    """Per-part mean L1 between matching raw outputs of a student and a teacher.

    Each part (e.g. ``cls``: (N, ΣHWA, K) logits; ``box``: (N, ΣHWA, 4) deltas) is averaged over
    its own elements, so a part with few elements (box deltas) is not drowned by a large one
    (class logits); the student's loss and the generator's discrepancy are their sum.

    Args:
        student, teacher: part name -> tensor; both must have the same parts and shapes.
        prefix: prepended to each part name in the returned keys.

    Returns:
        ``{prefix + part: scalar}``, differentiable w.r.t. whatever requires grad in the inputs.
    """
    if set(student) != set(teacher):
        raise KeyError(f"[dfad_discrepancy] student parts {sorted(student)} != {sorted(teacher)}")
    out = {}
    for part in student:
        try:
            out[prefix + part] = mean_l1(student[part], teacher[part])
        except ValueError as e:
            raise ValueError(f"[dfad_discrepancy] part '{part}': {e}") from e
    return out


def generator_loss(discrepancy: Tensor, form: str = "log") -> Tensor:
    """The generator's objective, minimised by its optimizer: it maximises the discrepancy.

    Args:
        discrepancy: a scalar ``d >= 0`` (the sum of :func:`dfad_discrepancy`'s parts).
        form: ``"log"``: ``-log(1 + d)`` (DFAD's segmentation scripts, used for dense outputs);
            ``"neg"``: ``-d`` (DFAD's classification scripts).

    Returns:
        a scalar.
    """
    if form == "log":
        return -torch.log1p(discrepancy)
    if form == "neg":
        return -discrepancy
    raise ValueError(f"[generator_loss] form must be 'log' or 'neg', got {form!r}")


CLS_DISTANCES = ("l1", "bce")


def foreground_weights(teacher_scores: Tensor, floor: float) -> Tensor:
    """Per-anchor weights from the teacher's foreground confidence, never below ``floor``.

    Args:
        teacher_scores: (N, A) the teacher's foreground probability per anchor (e.g. the max
            class sigmoid of a RetinaNet, the objectness sigmoid of an RPN).
        floor: the weight of an anchor the teacher calls background, in [0, 1].

    Returns:
        (N, A) ``max(score, floor)``, detached (the weights are not trained through).
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"[foreground_weights] floor must be in [0, 1], got {floor}")
    return teacher_scores.detach().clamp(min=floor)


def weighted_cls_discrepancy(
    student_logits: Tensor, teacher_logits: Tensor, weights: Tensor, distance: str = "l1"
) -> Tensor:
    """Class discrepancy per anchor, averaged with per-anchor weights.

    Per anchor ``a`` the distance over the K classes is the mean ``|s - t|`` of the logits
    (``"l1"``, DFAD's element distance) or the mean binary cross-entropy of the student's
    sigmoid against the teacher's sigmoid as a soft target (``"bce"``, the loss a sigmoid
    classifier is trained with, minus the teacher's entropy so it is 0 at agreement); the result
    is ``sum_a w_a d_a / sum_a w_a``.

    Args:
        student_logits, teacher_logits: (N, A, K) raw class logits.
        weights: (N, A) non-negative per-anchor weights (see :func:`foreground_weights`).
        distance: "l1" or "bce".

    Returns:
        a scalar, differentiable w.r.t. both logits (the teacher's only matters to the generator).
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 3:
        raise ValueError(
            f"[weighted_cls_discrepancy] logits must be (N, A, K) alike, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if weights.shape != student_logits.shape[:2]:
        raise ValueError(
            f"[weighted_cls_discrepancy] weights {tuple(weights.shape)} != (N, A) "
            f"{tuple(student_logits.shape[:2])}"
        )
    s, t = student_logits.float(), teacher_logits.float()
    if distance == "l1":
        per_anchor = (s - t).abs().mean(-1)
    elif distance == "bce":
        target = torch.sigmoid(t)
        # BCE(s; p_t) - H(p_t): the KL between the two Bernoullis, 0 when the logits agree.
        per_anchor = (
            F.binary_cross_entropy_with_logits(s, target, reduction="none")
            - F.binary_cross_entropy_with_logits(t, target, reduction="none")
        ).mean(-1)
    else:
        raise ValueError(f"[weighted_cls_discrepancy] distance must be in {CLS_DISTANCES}")
    w = weights.float()
    return (w * per_anchor).sum() / w.sum().clamp(min=1e-6)


def masked_box_discrepancy(student_deltas: Tensor, teacher_deltas: Tensor, mask: Tensor) -> Tensor:
    """Mean ``|s - t|`` of box deltas over the anchors in ``mask`` only.

    A dense detector never trains its box deltas on background anchors, so they are noise the
    student should not imitate. With no anchor in the mask the result is 0, still connected to
    the student's deltas (a mean would be NaN).

    Args:
        student_deltas, teacher_deltas: (N, A, D) box regression outputs.
        mask: (N, A) bool, the anchors where the teacher is confident.
    """
    if student_deltas.shape != teacher_deltas.shape or mask.shape != student_deltas.shape[:2]:
        raise ValueError(
            f"[masked_box_discrepancy] deltas {tuple(student_deltas.shape)} / "
            f"{tuple(teacher_deltas.shape)} and mask {tuple(mask.shape)} do not fit (N, A, D)"
        )
    diff = (student_deltas.float() - teacher_deltas.float()).abs().mean(-1)
    m = mask.to(diff.dtype)
    return (diff * m).sum() / m.sum().clamp(min=1.0)


def bn_statistics_loss(
    batch_means: Sequence[Tensor],
    batch_vars: Sequence[Tensor],
    running_means: Sequence[Tensor],
    running_vars: Sequence[Tensor],
) -> Tensor:
    """The image prior of DeepInversion (Yin et al., CVPR 2020) and DIODE: how far the batch
    statistics at every BatchNorm layer of the frozen teacher are from its running statistics.

    ``sum_l ||mu_l(x) - mu_l||_2 + ||var_l(x) - var_l||_2`` over the layers ``l``, where
    ``mu_l(x)``/``var_l(x)`` are the per-channel mean and (biased) variance of the layer's input
    on the generated batch.

    Args:
        batch_means, batch_vars: per layer (C_l,), computed from the generated batch (with
            gradient to the images).
        running_means, running_vars: per layer (C_l,), the teacher's stored statistics.

    Returns:
        a scalar (0 for no layer).
    """
    lists = (batch_means, batch_vars, running_means, running_vars)
    if len({len(x) for x in lists}) != 1:
        raise ValueError(f"[bn_statistics_loss] lists differ in length: {[len(x) for x in lists]}")
    total = None
    for i, (bm, bv, rm, rv) in enumerate(zip(*lists)):
        if not bm.shape == bv.shape == rm.shape == rv.shape:
            raise ValueError(
                f"[bn_statistics_loss] layer {i}: shapes {tuple(bm.shape)}, {tuple(bv.shape)}, "
                f"{tuple(rm.shape)}, {tuple(rv.shape)} differ"
            )
        term = torch.linalg.vector_norm(bm.float() - rm.float()) + torch.linalg.vector_norm(
            bv.float() - rv.float()
        )
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())
