"""HEAD (Wang et al., ECCV'22) as three KD terms: the assistant, AKD and CKD (and TF-HEAD).

Three terms, so each gets its own weight (and warm-up) from the Distiller's ``weights``:

* ``HEADAssistTerm`` owns the assistant (a Faster R-CNN box head on the student's P3-P6, fed by
  proposals from the student's RetinaNet outputs); returns its detection losses, whose gradients
  reach the student's FPN and backbone, and leaves its output in the context for the others.
* ``AKDTerm``: the assistant's pre-ReLU fc6/fc7, through linear adapters, vs the teacher's on the
  same RoIs.
* ``CKDTerm``: the student's classification-tower feature at each proposal's source anchor,
  through a linear adapter, vs the teacher's pre-ReLU fc7 (GT-as-proposal RoIs excluded); with
  ``target="assistant"`` the target is the student's own assistant fc7, detached (TF-HEAD).

The assistant term must come before the others in ``terms`` and have a nonzero weight.
"""

import logging
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ...losses.head import roi_mse
from ...modeling.assistant import (
    AssistantHead,
    AssistantOutput,
    anchor_proposals,
    fc_features,
    gather_cells,
)
from ..adapters import linear_adapter
from ..term import KDContext, KDTerm

__all__ = ["HEADAssistTerm", "AKDTerm", "CKDTerm"]

logger = logging.getLogger(__name__)

_RECORD = "_d2kd_head_assistant"  # attribute of the step's KDContext holding AssistantOutput


def _linears(module: nn.Module) -> List[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _box_head_of(teacher: Optional[nn.Module], owner: str):
    roi_heads = getattr(teacher, "roi_heads", None)
    box_head = getattr(roi_heads, "box_head", None)
    if box_head is None or not hasattr(roi_heads, "box_pooler") or not _linears(box_head):
        raise TypeError(
            f"[{owner}] the teacher must be a two-stage detector with an fc box head "
            f"(roi_heads.box_pooler / box_head), got {type(teacher).__name__}"
        )
    return roi_heads


def _record(ctx: KDContext, owner: str) -> AssistantOutput:
    out = getattr(ctx, _RECORD, None)
    if out is None:
        raise RuntimeError(
            f"[{owner}] no assistant output in this step: list a HEADAssistTerm before this term "
            "in the Distiller's terms, with a nonzero weight"
        )
    return out


def teacher_fcs(ctx: KDContext, out: AssistantOutput) -> List[Tensor]:
    """The teacher's pre-ReLU fc outputs on the assistant's RoIs, once per step, no gradient."""
    if "teacher_fcs" not in out.cache:
        roi_heads = ctx.teacher.roi_heads
        feats = ctx.teacher_features()
        with torch.no_grad():
            pooled = roi_heads.box_pooler([feats[f] for f in roi_heads.box_in_features], out.rois)
            out.cache["teacher_fcs"] = fc_features(roi_heads.box_head, pooled)[0]
    return out.cache["teacher_fcs"]


class HEADAssistTerm(KDTerm):
    """The assistant head: proposals from the student's RetinaNet, Faster R-CNN losses.

    Loss keys ``loss_<name>_cls`` and ``loss_<name>_box_reg`` (weight 1 in the paper).

    Args:
        in_features: student FPN levels the assistant pools from (P3-P6 as the paper).
        fc_dim: width of its fc6/fc7 (1024; the teacher's, to initialise from it).
        batch_size_per_image, positive_fraction: RoI sampling (Faster R-CNN: 512, 0.25).
        pre_nms_topk, post_nms_topk, nms_thresh: proposal generation per image (mmdet's
            ``rpn_proposal``: 2000 per level, 1000 per image, IoU 0.7 within each level).
        init_from_teacher: copy the teacher's box head and predictor where shapes match, once
            its weights are loaded (the paper's weight transfer).
        name: loss-key prefix.
    """

    student_taps = ("backbone", "head")

    def __init__(
        self,
        in_features: Sequence[str] = ("p3", "p4", "p5", "p6"),
        fc_dim: int = 1024,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        pre_nms_topk: int = 2000,
        post_nms_topk: int = 1000,
        nms_thresh: float = 0.7,
        init_from_teacher: bool = False,
        name: str = "assist",
    ):
        super().__init__()
        self.in_features = list(in_features)
        self.fc_dim = fc_dim
        self.sampling = dict(
            batch_size_per_image=batch_size_per_image, positive_fraction=positive_fraction
        )
        self.proposal_cfg = dict(
            pre_nms_topk=pre_nms_topk, post_nms_topk=post_nms_topk, nms_thresh=nms_thresh
        )
        self.init_from_teacher = init_from_teacher
        self.name = name

    def setup(self, student: nn.Module, teacher: Optional[nn.Module]) -> None:
        for attr in ("head", "anchor_generator", "box2box_transform", "head_in_features"):
            if not hasattr(student, attr):
                raise TypeError(
                    f"[HEADAssistTerm] the student must be a RetinaNet-like dense detector "
                    f"(missing '{attr}'), got {type(student).__name__}"
                )
        shapes = student.backbone.output_shape()
        missing = [f for f in self.in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"[HEADAssistTerm] in_features {missing} not in the student's backbone outputs; "
                f"available: {', '.join(shapes)}"
            )
        channels = {shapes[f].channels for f in self.in_features}
        if len(channels) != 1:
            raise ValueError(f"[HEADAssistTerm] in_features differ in channels: {channels}")
        if self.init_from_teacher:
            _box_head_of(teacher, "HEADAssistTerm")
        self.assistant = AssistantHead(
            in_channels=channels.pop(),
            num_classes=student.num_classes,
            strides=[shapes[f].stride for f in self.in_features],
            fc_dim=self.fc_dim,
            **self.sampling,
        )

    def on_teacher_loaded(self, teacher: Optional[nn.Module]) -> None:
        if not self.init_from_teacher:
            return
        roi_heads = _box_head_of(teacher, "HEADAssistTerm")
        skipped = self.assistant.load_from(roi_heads.box_head, roi_heads.box_predictor)
        logger.info(
            "[HEADAssistTerm] assistant initialised from the teacher's box head"
            + (f"; kept its own init for {skipped} (other shape)" if skipped else "")
        )

    def forward(self, ctx: KDContext) -> Dict[str, Tensor]:
        student = ctx.student
        feats = ctx.student_features
        logits, deltas = ctx.student_outputs["head"]
        anchors = student.anchor_generator([feats[f] for f in student.head_in_features])
        proposals = anchor_proposals(
            logits, deltas, anchors, student.box2box_transform, ctx.image_sizes, **self.proposal_cfg
        )
        out = self.assistant([feats[f] for f in self.in_features], proposals, ctx.gt_instances)
        setattr(ctx, _RECORD, out)
        return {f"loss_{self.name}_{k[5:]}": v for k, v in out.losses.items()}


class AKDTerm(KDTerm):
    """Assistant KD: adapted assistant fc6/fc7 (pre-ReLU) vs the teacher's on the same RoIs.

    Loss keys ``loss_<name>_fc6``, ``loss_<name>_fc7``; element-mean squared errors over every
    sampled RoI, GT-as-proposal included (as the official code).

    Args:
        student_fc_dim: the assistant's fc width (HEADAssistTerm's ``fc_dim``).
        name: loss-key prefix.
    """

    def __init__(self, student_fc_dim: int = 1024, name: str = "akd"):
        super().__init__()
        self.student_fc_dim = student_fc_dim
        self.name = name

    def setup(self, student: nn.Module, teacher: Optional[nn.Module]) -> None:
        roi_heads = _box_head_of(teacher, "AKDTerm")
        dims = [m.out_features for m in _linears(roi_heads.box_head)]
        # nn.Linear always (the official adapters exist even when sizes agree).
        self.adapters = nn.ModuleList(
            linear_adapter(self.student_fc_dim, d, force=True) for d in dims
        )

    def forward(self, ctx: KDContext) -> Dict[str, Tensor]:
        out = _record(ctx, "AKDTerm")
        t_fcs = teacher_fcs(ctx, out)
        if len(out.fcs) != len(t_fcs):
            raise ValueError(
                f"[AKDTerm] the assistant has {len(out.fcs)} fc layers, the teacher {len(t_fcs)}"
            )
        return {
            f"loss_{self.name}_fc{6 + i}": roi_mse(adapter(s), t)
            for i, (adapter, s, t) in enumerate(zip(self.adapters, out.fcs, t_fcs))
        }


class CKDTerm(KDTerm):
    """Cross-architecture KD: the student's cls-tower feature at each proposal's source anchor.

    Loss key ``loss_<name>``: element-mean squared error over the sampled RoIs that came from an
    anchor (positives and negatives; GT appended as proposals excluded).

    Args:
        target: "teacher" (HEAD: the teacher's pre-ReLU fc7 on the RoI) or "assistant"
            (TF-HEAD: the student's own assistant fc7, detached).
        target_dim: fc7 width when ``target="assistant"`` (HEADAssistTerm's ``fc_dim``).
        per_anchor: one adapter slice per anchor (Linear C -> A*D, the slice of the proposal's
            anchor, as the first commit and the TF-HEAD dev code) instead of one Linear C -> D.
        name: loss-key prefix.
    """

    student_taps = ("head.cls_subnet",)

    def __init__(
        self,
        target: str = "teacher",
        target_dim: int = 1024,
        per_anchor: bool = False,
        name: str = "ckd",
    ):
        super().__init__()
        if target not in ("teacher", "assistant"):
            raise ValueError(f"[CKDTerm] target must be 'teacher' or 'assistant', got {target!r}")
        self.target = target
        self.target_dim = target_dim
        self.per_anchor = per_anchor
        self.name = name

    def setup(self, student: nn.Module, teacher: Optional[nn.Module]) -> None:
        convs = [m for m in student.head.cls_subnet.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise TypeError("[CKDTerm] the student's head.cls_subnet has no convolution")
        self.num_levels = len(student.head_in_features)
        self.num_anchors = student.anchor_generator.num_cell_anchors[0]
        if self.target == "teacher":
            dim = _linears(_box_head_of(teacher, "CKDTerm").box_head)[-1].out_features
        else:
            dim = self.target_dim
        self.dim = dim
        out = dim * self.num_anchors if self.per_anchor else dim
        self.adapter = linear_adapter(convs[-1].out_channels, out, force=True)

    def forward(self, ctx: KDContext) -> Dict[str, Tensor]:
        out = _record(ctx, "CKDTerm")
        towers = ctx.student_all_outputs.get("head.cls_subnet", [])
        if len(towers) != self.num_levels:
            raise ValueError(
                f"[CKDTerm] expected {self.num_levels} head.cls_subnet outputs (one per level), "
                f"got {len(towers)}"
            )
        keep = (out.level >= 0).nonzero().squeeze(1)
        cells = gather_cells(towers, out.level[keep], out.img[keep], out.y[keep], out.x[keep])
        pred = self.adapter(cells)
        if self.per_anchor:
            pred = pred.view(-1, self.num_anchors, self.dim)
            pred = pred[torch.arange(pred.shape[0], device=pred.device), out.anchor[keep]]
        if self.target == "teacher":
            target = teacher_fcs(ctx, out)[-1][keep]
        else:
            target = out.fcs[-1][keep].detach()
        return {f"loss_{self.name}": roi_mse(pred, target)}
