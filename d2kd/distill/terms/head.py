"""HEAD (Wang et al., ECCV'22) as one KD term: the assistant, AKD and CKD (and TF-HEAD).

One term owns the whole method, so its parts share one step's assistant output through local
variables rather than through attributes of the context, and a schedule on one part can never
starve another. Which parts run is set by the arguments; the Distiller weights each part by its
loss key (``weights={"loss_akd": ..., "loss_ckd": ...}``, see :class:`Distiller`):

* the assistant (always): a Faster R-CNN box head on the student's P3-P6, fed by proposals from
  the student's RetinaNet outputs; its detection losses ``loss_assist_cls`` /
  ``loss_assist_box_reg`` reach the student's FPN and backbone;
* ``akd=True``: the assistant's pre-ReLU fc6/fc7 through linear adapters vs the teacher's on the
  same RoIs (``loss_akd_fc6``, ``loss_akd_fc7``);
* ``ckd="teacher"``: the student's classification-tower feature at each proposal's source anchor,
  through a linear adapter, vs the teacher's pre-ReLU fc7 (GT-as-proposal RoIs excluded;
  ``loss_ckd``); ``ckd="assistant"`` is TF-HEAD: the target is the student's own assistant fc7,
  detached, and no teacher is needed.
"""

import logging
from typing import Callable, Dict, List, Optional, Sequence

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
from ..probes import ProbeInputs, cost_probe
from ..term import KDContext, KDTerm

__all__ = ["HEADTerm"]

logger = logging.getLogger(__name__)

_CKD_TARGETS = (None, "teacher", "assistant")


def _linears(module: nn.Module) -> List[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _box_head_of(teacher: Optional[nn.Module]):
    roi_heads = getattr(teacher, "roi_heads", None)
    box_head = getattr(roi_heads, "box_head", None)
    if box_head is None or not hasattr(roi_heads, "box_pooler") or not _linears(box_head):
        raise TypeError(
            "[HEADTerm] AKD, CKD against the teacher and init_from_teacher need a two-stage "
            "teacher with an fc box head (roi_heads.box_pooler / box_head), got "
            f"{type(teacher).__name__}"
        )
    return roi_heads


class HEADTerm(KDTerm):
    """HEAD's assistant with AKD and CKD as switchable parts.

    Loss keys: ``loss_assist_cls``, ``loss_assist_box_reg`` (weight 1 in the paper), with
    ``akd``: ``loss_akd_fc6``, ``loss_akd_fc7``, with ``ckd``: ``loss_ckd``; element-mean
    squared errors (:func:`d2kd.losses.head.roi_mse`).

    Args:
        akd: distil the teacher's fc6/fc7 into the assistant (needs a two-stage teacher).
        ckd: None (off), "teacher" (HEAD's CKD) or "assistant" (TF-HEAD's teacher-free CKD).
        per_anchor: CKD's adapter has one slice per anchor (Linear C -> A*D, the slice of the
            proposal's anchor, as the TF-HEAD dev code) instead of one Linear C -> D.
        in_features: student FPN levels the assistant pools from (P3-P6 as the paper).
        fc_dim: width of the assistant's fc6/fc7 (1024, the teacher's, to initialise from it).
        batch_size_per_image, positive_fraction: RoI sampling (Faster R-CNN: 512, 0.25).
        pre_nms_topk, post_nms_topk, nms_thresh: proposal generation per image (mmdet's
            ``rpn_proposal``: 2000 per level, 1000 per image, IoU 0.7 within each level).
        init_from_teacher: copy the teacher's box head and predictor into the assistant where
            shapes match, once its weights are loaded (the paper's weight transfer).
    """

    student_taps = ("backbone", "head", "head.cls_subnet")

    def __init__(
        self,
        akd: bool = True,
        ckd: Optional[str] = "teacher",
        per_anchor: bool = False,
        in_features: Sequence[str] = ("p3", "p4", "p5", "p6"),
        fc_dim: int = 1024,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        pre_nms_topk: int = 2000,
        post_nms_topk: int = 1000,
        nms_thresh: float = 0.7,
        init_from_teacher: bool = False,
    ):
        super().__init__()
        if ckd not in _CKD_TARGETS:
            raise ValueError(f"[HEADTerm] ckd must be one of {_CKD_TARGETS}, got {ckd!r}")
        self.akd, self.ckd, self.per_anchor = bool(akd), ckd, bool(per_anchor)
        self.in_features = list(in_features)
        self.fc_dim = fc_dim
        self.sampling = dict(
            batch_size_per_image=batch_size_per_image, positive_fraction=positive_fraction
        )
        self.proposal_cfg = dict(
            pre_nms_topk=pre_nms_topk, post_nms_topk=post_nms_topk, nms_thresh=nms_thresh
        )
        self.init_from_teacher = init_from_teacher

    @property
    def needs_teacher(self) -> bool:
        return self.akd or self.ckd == "teacher" or self.init_from_teacher

    def setup(self, student: nn.Module, teacher: Optional[nn.Module]) -> None:
        for attr in ("head", "anchor_generator", "box2box_transform", "head_in_features"):
            if not hasattr(student, attr):
                raise TypeError(
                    f"[HEADTerm] the student must be a RetinaNet-like dense detector "
                    f"(missing '{attr}'), got {type(student).__name__}"
                )
        shapes = student.backbone.output_shape()
        missing = [f for f in self.in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"[HEADTerm] in_features {missing} not in the student's backbone outputs; "
                f"available: {', '.join(shapes)}"
            )
        channels = {shapes[f].channels for f in self.in_features}
        if len(channels) != 1:
            raise ValueError(f"[HEADTerm] in_features differ in channels: {channels}")
        teacher_dims = (
            [m.out_features for m in _linears(_box_head_of(teacher).box_head)]
            if (self.needs_teacher)
            else []
        )
        self.assistant = AssistantHead(
            in_channels=channels.pop(),
            num_classes=student.num_classes,
            strides=[shapes[f].stride for f in self.in_features],
            fc_dim=self.fc_dim,
            **self.sampling,
        )
        if self.akd:  # nn.Linear always: the official adapters exist even when sizes agree
            self.akd_adapters = nn.ModuleList(
                linear_adapter(self.fc_dim, d, force=True) for d in teacher_dims
            )
        if self.ckd is not None:
            convs = [m for m in student.head.cls_subnet.modules() if isinstance(m, nn.Conv2d)]
            if not convs:
                raise TypeError("[HEADTerm] the student's head.cls_subnet has no convolution")
            self.num_levels = len(student.head_in_features)
            self.num_anchors = student.anchor_generator.num_cell_anchors[0]
            self.ckd_dim = teacher_dims[-1] if self.ckd == "teacher" else self.fc_dim
            out = self.ckd_dim * (self.num_anchors if self.per_anchor else 1)
            self.ckd_adapter = linear_adapter(convs[-1].out_channels, out, force=True)

    def on_teacher_loaded(self, teacher: Optional[nn.Module]) -> None:
        if not self.init_from_teacher:
            return
        roi_heads = _box_head_of(teacher)
        skipped = self.assistant.load_from(roi_heads.box_head, roi_heads.box_predictor)
        logger.info(
            "[HEADTerm] assistant initialised from the teacher's box head"
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
        losses = {f"loss_assist_{k[5:]}": v for k, v in out.losses.items()}
        t_fcs = self._teacher_fcs(ctx, out) if self.akd or self.ckd == "teacher" else None
        if self.akd:
            losses.update(self._akd(out, t_fcs))
        if self.ckd is not None:
            losses["loss_ckd"] = self._ckd(ctx, out, t_fcs)
        return losses

    @staticmethod
    def _teacher_fcs(ctx: KDContext, out: AssistantOutput) -> List[Tensor]:
        """The teacher's pre-ReLU fc outputs on the assistant's RoIs, without gradient."""
        roi_heads = ctx.teacher.roi_heads
        feats = ctx.teacher_features()
        with torch.no_grad():
            pooled = roi_heads.box_pooler([feats[f] for f in roi_heads.box_in_features], out.rois)
            return fc_features(roi_heads.box_head, pooled)[0]

    def _akd(self, out: AssistantOutput, t_fcs: List[Tensor]) -> Dict[str, Tensor]:
        """AKD over every sampled RoI, GT-as-proposal included (as the official code)."""
        if len(out.fcs) != len(t_fcs):
            raise ValueError(
                f"[HEADTerm] AKD: the assistant has {len(out.fcs)} fc layers, the teacher "
                f"{len(t_fcs)}"
            )
        return {
            f"loss_akd_fc{6 + i}": roi_mse(adapter(s), t)
            for i, (adapter, s, t) in enumerate(zip(self.akd_adapters, out.fcs, t_fcs))
        }

    def _ckd(self, ctx: KDContext, out: AssistantOutput, t_fcs: Optional[List[Tensor]]) -> Tensor:
        """CKD over the sampled RoIs that came from an anchor (GT appended as proposals excluded)."""
        towers = ctx.student_all_outputs.get("head.cls_subnet", [])
        if len(towers) != self.num_levels:
            raise ValueError(
                f"[HEADTerm] CKD expected {self.num_levels} head.cls_subnet outputs (one per "
                f"level), got {len(towers)}"
            )
        keep = (out.level >= 0).nonzero().squeeze(1)
        cells = gather_cells(towers, out.level[keep], out.img[keep], out.y[keep], out.x[keep])
        pred = self.ckd_adapter(cells)
        if self.per_anchor:
            pred = pred.view(-1, self.num_anchors, self.ckd_dim)
            pred = pred[torch.arange(pred.shape[0], device=pred.device), out.anchor[keep]]
        target = t_fcs[-1][keep] if self.ckd == "teacher" else out.fcs[-1][keep].detach()
        return roi_mse(pred, target)

    # HEAD at the paper's sampling: 2 images x 512 RoIs, fc6/fc7 of 1024 (as the official code).
    PROBE_ROIS, PROBE_DIM = 1024, 1024

    @classmethod
    def cost_probes(cls, inputs: ProbeInputs) -> Dict[str, Callable[[], Tensor]]:
        """``head_akd``: the MSE of adapted assistant fc6 and fc7 rows against the teacher's;
        ``head_ckd``: of adapted cls-tower cells against the teacher's fc7 (the losses alone,
        on PROBE_ROIS rows of PROBE_DIM; the assistant head's own cost is the step's)."""
        n, d = cls.PROBE_ROIS, cls.PROBE_DIM
        (s6, t6), (s7, t7) = inputs.rows(n, d, seed=2), inputs.rows(n, d, seed=3)
        cells, target = inputs.rows(n, d, seed=4)
        return {
            "head_akd": cost_probe(lambda: roi_mse(s6, t6) + roi_mse(s7, t7), s6, s7),
            "head_ckd": cost_probe(lambda: roi_mse(cells, target), cells),
        }
