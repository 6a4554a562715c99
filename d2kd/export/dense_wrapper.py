"""Export-friendly wrapper for Detectron2 dense detectors (RetinaNet, FCOS).

detectron2's own inference path cannot go through ``torch.export`` (the ``numel() == 0`` branch in
``Boxes.__init__``, boolean-mask indexing, the per-class loop in ``batched_nms``), so this module
re-expresses the same computation with graph-friendly ops only:

* in the graph: normalisation ``(x - pixel_mean) / pixel_std``, padding to the backbone's
  ``size_divisibility`` (with 0 after normalisation, as ``ImageList.from_tensors`` does), backbone,
  FPN, head and, in ``e2e`` mode, anchors, a fixed per-level top-k decode, class-aware NMS
  (``torchvision.ops.nms`` on class-offset boxes; the ONNX op is ``NonMaxSuppression``), clipping
  to the input image and the empty-box filter of ``detector_postprocess``;
* not in the graph: resizing (``ResizeShortestEdge`` of the recipe's test mapper) and the final
  rescale of boxes to the original image size (detectron2's ``detector_postprocess``, called by
  :func:`d2kd.export.parity.graph_detections`).

Order of operations versus detectron2: detectron2 thresholds the scores and then takes the top-k of
what passes; the wrapper takes the top-k and then zeroes the scores under the threshold. Both keep
exactly the same set of positive candidates, and zero-score candidates sort after every real one in
NMS, so they can neither suppress nor displace a real detection. Outputs are padded to exactly
``max_detections_per_image`` rows by ``max_det`` never-overlapping dummy boxes, scored between the
threshold and 0, so the output shape is static and the exported NMS can skip the zeroed candidates
(an O(n^2) loop over every top-k candidate was a third of a small image's latency).
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
import torchvision
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from torch import Tensor, nn

from ..modeling.family import is_dense

__all__ = ["DenseExportWrapper"]


class DenseExportWrapper(nn.Module):
    """Single-image RetinaNet / FCOS forward made of export-friendly ops.

    Input: ``image`` float32 ``(1, 3, H, W)``, the resized image in the model's input format (BGR
    0-255 for detectron2 defaults), any H and W; the graph normalises and pads it.

    Outputs in ``raw`` mode: ``cls_logits (1, R, K)`` and ``box_deltas (1, R, 4)`` (plus
    ``ctrness (1, R, 1)`` for FCOS), ``R = sum_l H_l * W_l * A`` in detectron2's
    ``permute_to_N_HWA_K`` order, levels concatenated in ``head_in_features`` order.

    Outputs in ``e2e`` mode: ``boxes (D, 4)`` xyxy in input-image pixels, clipped to ``(H, W)``;
    ``scores (D,)``; ``classes (D,)`` int64; ``D = max_detections_per_image``; rows sorted by
    decreasing score, padding rows (and rows detectron2 would drop as empty) have score 0, class
    -1 and a zero box.
    """

    def __init__(self, model: nn.Module, mode: str = "e2e") -> None:
        """
        Args:
            model: a RetinaNet or FCOS in eval mode (not copied: weights are shared).
            mode: ``"raw"`` (backbone + FPN + head), ``"e2e"`` (plus decode and NMS) or
                ``"both"`` (e2e outputs then raw outputs: one trace that
                :func:`d2kd.export.onnx_export.keep_outputs` splits into the two graphs).
        """
        super().__init__()
        from detectron2.modeling.meta_arch.fcos import FCOS

        if not is_dense(model):
            raise TypeError(
                f"[export] DenseExportWrapper supports Detectron2 DenseDetectors (RetinaNet, "
                f"FCOS), got {type(model).__name__}"
            )
        if mode not in ("raw", "e2e", "both"):
            raise ValueError(f"[export] mode must be 'raw', 'e2e' or 'both', got {mode!r}")
        self.model = model
        self.mode = mode
        self.is_fcos = isinstance(model, FCOS)
        self.num_classes = int(model.num_classes)
        self.size_divisibility = int(model.backbone.size_divisibility)
        constraints = getattr(model.backbone, "padding_constraints", {}) or {}
        if constraints.get("square_size", 0):
            raise ValueError("[export] backbones padding to a square are not supported")
        self.size_divisibility = int(constraints.get("size_divisibility", self.size_divisibility))

    E2E_OUTPUTS = ("boxes", "scores", "classes")

    @property
    def nms_score_floor(self) -> float | None:
        """A score between the zeroed candidates (0) and the dummies (``thresh / 2``): the graph's
        NonMaxSuppression may ignore every candidate under it (None: threshold 0, no floor)."""
        thresh = float(self.model.test_score_thresh)
        return thresh / 4 if thresh > 0 else None

    @property
    def raw_output_names(self) -> List[str]:
        """Names of the raw outputs."""
        return ["cls_logits", "box_deltas"] + (["ctrness"] if self.is_fcos else [])

    @property
    def output_names(self) -> List[str]:
        """ONNX output names, in the order :meth:`forward` returns them."""
        e2e, raw = list(self.E2E_OUTPUTS), self.raw_output_names
        return {"e2e": e2e, "raw": raw, "both": e2e + raw}[self.mode]

    def preprocess(self, image: Tensor) -> Tensor:
        """Normalise ``(1, 3, H, W)`` raw pixels and pad H, W up to the size divisibility."""
        m = self.model
        x = (image - m.pixel_mean) / m.pixel_std
        d = self.size_divisibility
        if d > 1:
            h, w = x.shape[-2], x.shape[-1]
            hp, wp = (h + d - 1) // d * d, (w + d - 1) // d * d
            x = F.pad(x, (0, wp - w, 0, hp - h), value=0.0)
        return x

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        """Run the detector on one image; see the class docstring for shapes."""
        m = self.model
        feats = m.backbone(self.preprocess(image))
        feats = [feats[f] for f in m.head_in_features]
        preds = m.head(feats)
        logits, deltas = preds[0], preds[1]
        ctrness = preds[2] if self.is_fcos else None
        k = self.num_classes
        logits = [permute_to_N_HWA_K(x, k)[0] for x in logits]  # per level (HWA, K)
        deltas = [permute_to_N_HWA_K(x, 4)[0] for x in deltas]
        ctrs = [permute_to_N_HWA_K(x, 1)[0] for x in ctrness] if ctrness is not None else None
        raw = [torch.cat(logits)[None], torch.cat(deltas)[None]]
        if ctrs is not None:
            raw.append(torch.cat(ctrs)[None])
        if self.mode == "raw":
            return tuple(raw)
        e2e = self._decode_and_nms(image, self._anchors(feats), logits, deltas, ctrs)
        return e2e if self.mode == "e2e" else e2e + tuple(raw)

    def _anchors(self, feats: List[Tensor]) -> List[Tensor]:
        """Per-level anchors ``(H_l * W_l * A, 4)``, equal to ``DefaultAnchorGenerator``'s.

        detectron2 builds grid offsets with a float ``arange(offset * s, W * s, step=s)``, whose
        length is a ``ceil`` of a float that ``torch.export`` cannot prove to be > 1 for dynamic
        sizes; an integer ``arange(W)`` scaled by the stride gives the same values exactly.
        """
        gen = self.model.anchor_generator
        if type(gen).__name__ != "DefaultAnchorGenerator":
            return [a.tensor for a in gen(feats)]
        cell = [x[1] for x in gen.cell_anchors.named_buffers()]
        out = []
        for f, stride, base in zip(feats, gen.strides, cell):
            # flat (row-major) cell index, so no meshgrid/reshape of an expanded view is traced
            w = _size(f, -1)
            idx = torch.arange(f.shape[-2] * f.shape[-1], device=f.device)
            row = torch.div(idx, w, rounding_mode="floor")
            xx = (idx - row * w).to(torch.float32) * stride + gen.offset * stride
            yy = row.to(torch.float32) * stride + gen.offset * stride
            shifts = torch.stack((xx, yy, xx, yy), dim=1)
            out.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return out

    def _decode_and_nms(
        self,
        image: Tensor,
        anchors: List[Tensor],
        logits: List[Tensor],
        deltas: List[Tensor],
        ctrs: List[Tensor] | None,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Top-k decode per level, class-aware NMS, fixed-size output.

        Args:
            image: ``(1, 3, H, W)`` input, only its shape is used (for clipping).
            anchors: per level ``(HWA, 4)``.
            logits: per level ``(HWA, K)``.
            deltas: per level ``(HWA, 4)``.
            ctrs: per level ``(HW, 1)`` centerness logits (FCOS) or None.

        Returns:
            ``boxes (D, 4)``, ``scores (D,)``, ``classes (D,)`` int64, see the class docstring.
        """
        m = self.model
        k = self.num_classes
        all_boxes, all_scores, all_classes = [], [], []
        for lvl, (anc, lg, dl) in enumerate(zip(anchors, logits, deltas)):
            scores = lg.sigmoid()
            if ctrs is not None:
                scores = torch.sqrt(scores * ctrs[lvl].sigmoid())
            flat = scores.flatten()
            topk = self._num_topk(flat)
            s, idx = flat.topk(topk)
            a = torch.div(idx, k, rounding_mode="floor")
            c = idx - a * k
            all_boxes.append(m.box2box_transform.apply_deltas(dl[a], anc[a]))
            all_scores.append(s)
            all_classes.append(c)
        boxes = torch.cat(all_boxes)
        scores = torch.cat(all_scores)
        classes = torch.cat(all_classes)
        thresh = float(m.test_score_thresh)
        scores = torch.where(scores > thresh, scores, torch.zeros_like(scores))

        # Class-aware NMS by offsets: shift every class (and every dummy) into its own disjoint
        # band of width `span`, so boxes of different bands never overlap. Unlike torchvision's
        # trick (offset = cls * (max + 1)) this stays exact when coordinates are negative.
        max_det = int(m.max_detections_per_image)
        lo = boxes.min()
        span = boxes.max() - lo + 2.0
        dummy_band = torch.arange(k, k + max_det, device=boxes.device, dtype=boxes.dtype)
        unit = torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device, dtype=boxes.dtype)
        dummies = dummy_band[:, None] * span + unit  # (D, 4), one per band, area 1
        shifted = torch.cat([boxes - lo + classes.to(boxes.dtype)[:, None] * span, dummies])
        # Dummies rank after every real candidate (> thresh) and before the zeroed ones (0), so
        # an NMS told to ignore scores under `nms_score_floor` skips the zeroed ones (most of the
        # top-k) and still returns max_det rows; see onnx_export.skip_low_scores_in_nms.
        dummy_score = thresh / 2 if thresh > 0 else -1.0
        nms_scores = torch.cat([scores, torch.full_like(dummy_band, dummy_score)])
        keep = torchvision.ops.nms(shifted, nms_scores, float(m.test_nms_thresh))[:max_det]

        pad_boxes = torch.zeros_like(dummies)
        pad_classes = torch.full((max_det,), -1, dtype=classes.dtype, device=classes.device)
        out_boxes = torch.cat([boxes, pad_boxes])[keep]
        out_scores = torch.cat([scores, torch.zeros_like(dummy_band)])[keep]
        out_classes = torch.cat([classes, pad_classes])[keep]

        h, w = _size(image, -2).to(torch.float32), _size(image, -1).to(torch.float32)
        x = torch.minimum(out_boxes[:, 0::2].clamp(min=0.0), w)
        y = torch.minimum(out_boxes[:, 1::2].clamp(min=0.0), h)
        out_boxes = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)
        valid = (out_scores > 0) & (x[:, 1] > x[:, 0]) & (y[:, 1] > y[:, 0])
        out_scores = torch.where(valid, out_scores, torch.zeros_like(out_scores))
        out_classes = torch.where(valid, out_classes, torch.full_like(out_classes, -1))
        out_boxes = torch.where(valid[:, None], out_boxes, torch.zeros_like(out_boxes))
        return out_boxes, out_scores, out_classes

    def _num_topk(self, flat: Tensor) -> int | Tensor:
        """``min(test_topk_candidates, numel)``, kept symbolic under both exporters.

        Under the legacy tracer a Python ``min`` would bake the export-size value into the graph
        (see export-notes §1.4b), so the traced path uses ``torch.clamp`` on a shape tensor.
        """
        topk = int(self.model.test_topk_candidates)
        if torch.jit.is_tracing():
            return torch.clamp(torch._shape_as_tensor(flat)[0], max=topk)
        return min(topk, flat.shape[0])


def _size(t: Tensor, dim: int) -> Tensor:
    """``t.shape[dim]`` as a 0-d int64 tensor that stays symbolic under both exporters.

    The dynamo exporter cannot lower Python arithmetic between a tensor and a symbolic int
    (``remainder.Scalar``, ``clamp`` with a symbolic bound), and the legacy tracer would bake a
    Python int into the graph; a 0-d tensor is symbolic in both.
    """
    if torch.jit.is_tracing():
        return torch._shape_as_tensor(t)[dim]
    return torch.scalar_tensor(t.shape[dim], dtype=torch.int64, device=t.device)
