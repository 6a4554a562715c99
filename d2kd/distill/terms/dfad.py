"""DFAD as a KD term: the L1 discrepancy between a student's and a teacher's raw dense outputs.

The term runs both detectors itself (``Distiller(student_losses=False)``), on whatever images
the batch holds: generated ones in data-free training (``d2kd.engine.dfad``), real ones in the
"KD with the original data" comparison. The generator step calls :meth:`DFADTerm.discrepancy`
with ``teacher_grad=True`` to differentiate through the frozen teacher w.r.t. its input.
"""

from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.structures import ImageList
from torch import Tensor, nn

from ...losses.discrepancy import (
    CLS_DISTANCES,
    dfad_discrepancy,
    foreground_weights,
    masked_box_discrepancy,
    mean_l1,
    weighted_cls_discrepancy,
)
from ...modeling.family import detector_family
from ..adapters import conv_adapter
from ..probes import ProbeInputs, cost_probe
from ..term import KDContext, KDTerm

__all__ = ["DFADTerm", "FORMS"]

FORMS = ("official", "foreground")


def _flip_if_needed(image: Tensor, src: str, dst: str) -> Tensor:
    return image.flip(0) if src != dst else image


class DFADTerm(KDTerm):
    """Data-free adversarial distillation's discrepancy (Fang et al., arXiv 1912.11006).

    Parts (with ``form="official"``, each the mean L1 over its elements, as the paper):

    * RetinaNet-style: ``cls`` (N, ΣHWA, K) class logits and ``box`` (N, ΣHWA, 4) deltas over
      every anchor of every level;
    * Faster R-CNN: ``rpn_obj`` (N, ΣHWA) objectness logits and ``rpn_box`` (N, ΣHWA, 4) deltas
      over every anchor, and ``roi_cls`` (R, K+1) / ``roi_box`` (R, 4K) of both RoI heads on the
      same boxes: the student's top ``roi_boxes_per_image`` proposals per image (without GT there
      is no RoI sampling; the teacher's head runs on the student's proposals);
    * optionally ``fpn_<level>`` for the levels in ``features`` (student maps through a 1x1
      adapter where channels differ, trained with the student).

    With ``form="foreground"`` the same parts are compared where the teacher has learned
    something (``d2kd.losses.discrepancy``): each anchor's class distance (``cls``, ``rpn_obj``,
    ``roi_cls``) is weighted by the teacher's foreground confidence (max class sigmoid, objectness
    sigmoid, max foreground softmax), never below ``floor``, and box deltas count only where that
    confidence is at least ``box_threshold``.

    Loss keys ``loss_<name>_<part>``. Student and teacher must share the detector family, the
    number of classes and the anchors per location.

    Args:
        features: FPN levels to add to the discrepancy (default none: DFAD uses outputs only).
        roi_boxes_per_image: proposals per image on which both RoI heads are compared.
        name: method name in loss keys.
        form: "official" (the paper's all-anchor mean L1) or "foreground".
        cls_distance: the foreground form's per-anchor class distance, "l1" on logits or "bce"
            (the student's sigmoid against the teacher's as a soft target; softmax RoI heads
            always use "l1").
        floor: the weight of an anchor the teacher calls background (foreground form).
        box_threshold: the teacher confidence from which box deltas count (foreground form).
    """

    student_taps = ()

    def __init__(
        self,
        features: Sequence[str] = (),
        roi_boxes_per_image: int = 128,
        name: str = "dfad",
        form: str = "official",
        cls_distance: str = "l1",
        floor: float = 0.05,
        box_threshold: float = 0.5,
    ):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"[DFAD] form must be one of {FORMS}, got {form!r}")
        if cls_distance not in CLS_DISTANCES:
            raise ValueError(
                f"[DFAD] cls_distance must be one of {CLS_DISTANCES}, got {cls_distance!r}"
            )
        self.form, self.cls_distance = form, cls_distance
        self.floor, self.box_threshold = float(floor), float(box_threshold)
        self.features = list(features)
        self.roi_boxes_per_image = int(roi_boxes_per_image)
        self.name = name
        self.kind = ""
        self.adapters = nn.ModuleDict()

    def setup(self, student: nn.Module, teacher: Optional[nn.Module]) -> None:
        if teacher is None:
            raise ValueError("[DFAD] the term needs a teacher (Distiller(teacher=...))")
        kinds = detector_family(student, "DFAD"), detector_family(teacher, "DFAD")
        if kinds[0] != kinds[1]:
            raise ValueError(f"[DFAD] student is {kinds[0]} but teacher is {kinds[1]}")
        self.kind = kinds[0]
        if self.kind == "dense":
            pairs = [("num_classes", student.num_classes, teacher.num_classes)]
            s_anchor, t_anchor = student.anchor_generator, teacher.anchor_generator
        else:
            s_roi, t_roi = student.roi_heads, teacher.roi_heads
            pairs = [("roi_heads.num_classes", s_roi.num_classes, t_roi.num_classes)]
            s_anchor = student.proposal_generator.anchor_generator
            t_anchor = teacher.proposal_generator.anchor_generator
        pairs.append(("anchors per location", s_anchor.num_anchors, t_anchor.num_anchors))
        for what, s, t in pairs:
            if s != t:
                raise ValueError(f"[DFAD] {what} differ: student {s}, teacher {t}")
        s_shapes, t_shapes = student.backbone.output_shape(), teacher.backbone.output_shape()
        for level in self.features:
            if level not in s_shapes or level not in t_shapes:
                raise ValueError(
                    f"[DFAD] feature level '{level}' not in both backbones; student: "
                    f"{list(s_shapes)}, teacher: {list(t_shapes)}"
                )
            self.adapters[level] = conv_adapter(s_shapes[level].channels, t_shapes[level].channels)

    def dense_outputs(
        self,
        model: nn.Module,
        images: ImageList,
        features: Dict[str, Tensor],
        boxes: Optional[List[Any]] = None,
    ) -> Dict[str, Tensor]:
        """Raw outputs of one detector; ``boxes`` (R-CNN) are the RoIs both heads share.

        Returns:
            part name -> tensor (shapes in the class docstring). For R-CNN, also
            ``"_boxes"`` (the model's own top proposals, a list of Boxes) when ``boxes`` is None.
        """
        if self.kind == "dense":
            logits, deltas = model.head([features[f] for f in model.head_in_features])
            return {
                "cls": torch.cat([permute_to_N_HWA_K(x, model.num_classes) for x in logits], 1),
                "box": torch.cat([permute_to_N_HWA_K(x, 4) for x in deltas], 1),
            }
        rpn = model.proposal_generator
        rpn_feats = [features[f] for f in rpn.in_features]
        objectness, deltas = rpn.rpn_head(rpn_feats)
        obj = [x.permute(0, 2, 3, 1).flatten(1) for x in objectness]
        box_dim = rpn.anchor_generator.box_dim
        dlt = [permute_to_N_HWA_K(x, box_dim) for x in deltas]
        out = {"rpn_obj": torch.cat(obj, 1), "rpn_box": torch.cat(dlt, 1)}
        if boxes is None:  # the proposals are constants for both heads, as in Detectron2
            proposals = rpn.predict_proposals(
                rpn.anchor_generator(rpn_feats), obj, dlt, images.image_sizes
            )
            boxes = [p.proposal_boxes[: self.roi_boxes_per_image] for p in proposals]
            out["_boxes"] = boxes
        roi = model.roi_heads
        pooled = roi.box_pooler([features[f] for f in roi.box_in_features], boxes)
        out["roi_cls"], out["roi_box"] = roi.box_predictor(roi.box_head(pooled))
        return out

    def discrepancy(
        self,
        student: nn.Module,
        teacher: nn.Module,
        batched_inputs: List[Dict[str, Any]],
        teacher_grad: bool = False,
    ) -> Dict[str, Tensor]:
        """Per-part discrepancy ``{loss_<name>_<part>: scalar}`` on one batch.

        Args:
            student, teacher: the detectors (the teacher frozen, in eval mode).
            batched_inputs: dicts with "image" (3, H, W) raw pixels in the student's channel
                order (``"input_format"`` in the dict overrides it), as Detectron2 mappers give.
            teacher_grad: run the teacher with autograd on, so the result is differentiable
                w.r.t. the images through both models (the generator step); its parameters stay
                frozen. False: the teacher runs under ``torch.no_grad()`` (the student step).
        """
        s_images = student.preprocess_image(batched_inputs)
        s_feats = student.backbone(s_images.tensor)
        s_out = self.dense_outputs(student, s_images, s_feats)
        boxes = s_out.pop("_boxes", None)
        s_fmt, t_fmt = student.input_format, teacher.input_format
        t_inputs = [
            {"image": _flip_if_needed(x["image"], x.get("input_format", s_fmt), t_fmt)}
            for x in batched_inputs
        ]
        with nullcontext() if teacher_grad else torch.no_grad():
            t_images = teacher.preprocess_image(t_inputs)
            t_feats = teacher.backbone(t_images.tensor)
            t_out = self.dense_outputs(teacher, t_images, t_feats, boxes)
        for level in self.features:
            s_out[f"fpn_{level}"] = self.adapters[level](s_feats[level])
            t_out[f"fpn_{level}"] = t_feats[level]
        if self.form == "official":
            return dfad_discrepancy(s_out, t_out, prefix=f"loss_{self.name}_")
        return self.foreground_discrepancy(s_out, t_out)

    def foreground_discrepancy(
        self, s_out: Dict[str, Tensor], t_out: Dict[str, Tensor]
    ) -> Dict[str, Tensor]:
        """The foreground-aware form: class parts weighted by the teacher's confidence per anchor
        (or RoI), box parts compared where it is at least ``box_threshold``; FPN parts as DFAD."""
        p = f"loss_{self.name}_"
        out = {}
        if self.kind == "dense":
            conf = torch.sigmoid(t_out["cls"].detach().amax(-1))  # (N, A) max class probability
            pairs = [("cls", "box", conf, s_out["cls"], t_out["cls"])]
        else:
            rpn_conf = torch.sigmoid(t_out["rpn_obj"].detach())  # (N, A) objectness
            roi_conf = torch.softmax(t_out["roi_cls"].detach().float(), -1)[:, :-1].amax(-1)
            s_obj, t_obj = s_out["rpn_obj"][..., None], t_out["rpn_obj"][..., None]
            s_roi, t_roi = s_out["roi_cls"][None], t_out["roi_cls"][None]
            pairs = [
                ("rpn_obj", "rpn_box", rpn_conf, s_obj, t_obj),
                ("roi_cls", "roi_box", roi_conf[None], s_roi, t_roi),
            ]
        for cls_key, box_key, conf, s_cls, t_cls in pairs:
            distance = self.cls_distance
            if cls_key == "roi_cls" and distance == "bce":
                distance = "l1"  # a softmax head: compare logits, not per-class sigmoids
            weights = foreground_weights(conf, self.floor)
            out[p + cls_key] = weighted_cls_discrepancy(s_cls, t_cls, weights, distance)
            s_box, t_box = s_out[box_key], t_out[box_key]
            if s_box.dim() == 2:  # RoI deltas (R, 4K) -> (1, R, 4K)
                s_box, t_box = s_box[None], t_box[None]
            out[p + box_key] = masked_box_discrepancy(s_box, t_box, conf >= self.box_threshold)
        for key in s_out:
            if key.startswith("fpn_"):
                out[p + key] = mean_l1(s_out[key], t_out[key])
        return out

    def forward(self, ctx: KDContext) -> Dict[str, Tensor]:
        return self.discrepancy(ctx.student, ctx.teacher, ctx.batched_inputs)

    def loss_keys(self) -> Optional[List[str]]:
        """One key per compared part: the heads' parts of the family found by :meth:`setup`
        (both forms compare the same parts), then the FPN levels; None before setup."""
        if not self.kind:
            return None
        parts = (
            ["cls", "box"] if self.kind == "dense" else ["rpn_obj", "rpn_box", "roi_cls", "roi_box"]
        )
        parts += [f"fpn_{level}" for level in self.features]
        return [f"loss_{self.name}_{part}" for part in parts]

    @classmethod
    def cost_probes(cls, inputs: ProbeInputs) -> Dict[str, Callable[[], Tensor]]:
        """``dfad``: the discrepancy of a COCO RetinaNet's raw outputs over every anchor of the
        maps' levels (9 anchors per location): 80 class logits and 4 box deltas each."""
        anchors = sum(9 * h * w for h, w in inputs.shapes.level_hw().values())
        g = torch.Generator().manual_seed(5)

        def draw(dim: int) -> Tensor:
            return torch.randn(inputs.shapes.batch, anchors, dim, generator=g).to(inputs.device)

        student = {k: draw(d).requires_grad_(True) for k, d in (("cls", 80), ("box", 4))}
        teacher = {k: draw(v.shape[-1]) for k, v in student.items()}
        return {
            "dfad": cost_probe(lambda: sum(dfad_discrepancy(student, teacher).values()), student)
        }
