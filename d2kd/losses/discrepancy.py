"""DFAD's model discrepancy (Fang et al., "Data-Free Adversarial Distillation", arXiv 1912.11006).

The student minimises the mean absolute difference between its raw (pre-activation) outputs
and the teacher's on generated images; the generator maximises the same quantity. For dense
outputs (segmentation in the paper, detection here) the generator's objective is
``-log(1 + L1)``, whose gradient stays bounded when the discrepancy is large.
"""

from typing import Dict, Mapping

import torch
from torch import Tensor

__all__ = ["mean_l1", "dfad_discrepancy", "generator_loss"]


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
