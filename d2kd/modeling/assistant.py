"""HEAD's assistant: a Faster R-CNN box head trained on a one-stage student's features.

The assistant lives in a KD term, never in the student: it is dropped at inference and export.
Its proposals come from the student's RetinaNet outputs (class-max scores, per-level NMS), and
each proposal remembers the anchor that produced it, (level, image, y, x, anchor), so CKD can
read the student's classification tower at that cell. GT boxes appended as proposals carry
level -1.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.layers import ShapeSpec, batched_nms
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads.box_head import FastRCNNConvFCHead
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.modeling.sampling import subsample_labels
from detectron2.structures import Boxes, Instances, pairwise_iou
from torch import Tensor, nn

__all__ = [
    "AnchorProposals",
    "AssistantHead",
    "AssistantOutput",
    "anchor_proposals",
    "fc_features",
    "gather_cells",
]


@dataclass
class AnchorProposals:
    """Proposals of one batch with the anchor each came from.

    Attributes:
        boxes: per image (P_i, 4) XYXY in input pixels, detached.
        scores: per image (P_i,) class-max logits, detached.
        level, y, x, anchor: per image (P_i,) long: index into the head's levels, cell, anchor.
    """

    boxes: List[Tensor]
    scores: List[Tensor]
    level: List[Tensor]
    y: List[Tensor]
    x: List[Tensor]
    anchor: List[Tensor]


@torch.no_grad()
def anchor_proposals(
    logits: Sequence[Tensor],
    deltas: Sequence[Tensor],
    anchors: Sequence[Boxes],
    box2box_transform: Box2BoxTransform,
    image_sizes: Sequence[Tuple[int, int]],
    pre_nms_topk: int = 2000,
    post_nms_topk: int = 1000,
    nms_thresh: float = 0.7,
) -> AnchorProposals:
    """RPN-style proposals from a RetinaNet head, keeping each one's source anchor.

    Per level: score = max over classes of the logits (sigmoid is monotonic, so ranking by logits
    equals mmdet's ranking by probabilities), top ``pre_nms_topk`` anchors, decode, clip, drop
    empty boxes; then NMS within each (image, level) in one batched call, and the top
    ``post_nms_topk`` per image over all levels.

    Args:
        logits: per level (N, A*K, H, W), Detectron2's layout (channel = a*K + k).
        deltas: per level (N, A*4, H, W).
        anchors: per level Boxes (H*W*A, 4), flattened (H, W, A) as Detectron2's generator.
        box2box_transform: the head's delta decoder.
        image_sizes: per image (h, w) before padding.

    Returns:
        :class:`AnchorProposals`, each image's proposals sorted by decreasing score.
    """
    n = logits[0].shape[0]
    device = logits[0].device
    boxes, scores, lvls, ys, xs, ans = [], [], [], [], [], []
    for lvl, (lg, dl, anc) in enumerate(zip(logits, deltas, anchors)):
        _, ak, h, w = lg.shape
        a = anc.tensor.shape[0] // (h * w)
        if a * h * w != anc.tensor.shape[0] or ak % a:
            raise ValueError(
                f"[anchor_proposals] level {lvl}: {anc.tensor.shape[0]} anchors do not fit "
                f"logits {tuple(lg.shape)}"
            )
        k = ak // a
        s = lg.detach().view(n, a, k, h, w).amax(dim=2).permute(0, 2, 3, 1).reshape(n, -1)
        d = dl.detach().view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        top = min(pre_nms_topk, s.shape[1])
        s, idx = s.topk(top, dim=1)  # (N, top)
        d = d.gather(1, idx[..., None].expand(-1, -1, 4))
        b = box2box_transform.apply_deltas(d.reshape(-1, 4), anc.tensor[idx.reshape(-1)])
        boxes.append(b.view(n, top, 4))
        scores.append(s)
        lvls.append(torch.full_like(idx, lvl))
        ys.append(idx // (w * a))
        xs.append((idx // a) % w)
        ans.append(idx % a)
    boxes, scores = torch.cat(boxes, 1), torch.cat(scores, 1)  # (N, T, 4), (N, T)
    lvls, ys, xs, ans = (torch.cat(v, 1) for v in (lvls, ys, xs, ans))
    # Clip to each image, drop empty or non-finite boxes (mmdet's min_bbox_size=0: w, h > 0).
    hw = torch.as_tensor(image_sizes, device=device, dtype=boxes.dtype)  # (N, 2)
    limit = hw[:, [1, 0, 1, 0]][:, None, :]
    boxes = torch.minimum(boxes.clamp(min=0), limit)
    valid = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    valid &= torch.isfinite(boxes).all(-1) & torch.isfinite(scores)
    img = torch.arange(n, device=device)[:, None].expand_as(scores)
    num_levels = len(logits)
    flat = valid.view(-1).nonzero().squeeze(1)
    group = (img * num_levels + lvls).reshape(-1)[flat]
    keep = flat[batched_nms(boxes.view(-1, 4)[flat], scores.view(-1)[flat], group, nms_thresh)]
    # ``keep`` is sorted by decreasing score: a stable sort by image keeps that order per image.
    keep = keep[torch.sort(img.reshape(-1)[keep], stable=True).indices]
    counts = torch.bincount(img.reshape(-1)[keep], minlength=n).tolist()
    out = AnchorProposals([], [], [], [], [], [])
    for chunk in keep.split(counts):
        chunk = chunk[:post_nms_topk]
        out.boxes.append(boxes.view(-1, 4)[chunk])
        out.scores.append(scores.view(-1)[chunk])
        out.level.append(lvls.view(-1)[chunk])
        out.y.append(ys.view(-1)[chunk])
        out.x.append(xs.view(-1)[chunk])
        out.anchor.append(ans.view(-1)[chunk])
    return out


def gather_cells(maps: Sequence[Tensor], level: Tensor, img: Tensor, y: Tensor, x: Tensor):
    """Feature vectors of per-level maps at given cells.

    Args:
        maps: per level (N, C, H_l, W_l).
        level, img, y, x: (M,) long indices; every level must be in ``range(len(maps))``.

    Returns:
        (M, C): row i is ``maps[level[i]][img[i], :, y[i], x[i]]``.
    """
    out = maps[0].new_zeros((level.shape[0], maps[0].shape[1]))
    for lvl, fmap in enumerate(maps):
        sel = (level == lvl).nonzero().squeeze(1)
        out = out.index_put((sel,), fmap[img[sel], :, y[sel], x[sel]])
    return out


def fc_features(box_head: nn.Module, x: Tensor) -> Tuple[List[Tensor], Tensor]:
    """Run a Detectron2 FastRCNNConvFCHead, keeping every fc output before its ReLU.

    Returns:
        ([fc6 (R, D6), fc7 (R, D7), ...] pre-ReLU, the head's final output (R, D)).
    """
    fcs = []
    for layer in box_head:
        x = layer(x)
        if isinstance(layer, nn.Linear):
            fcs.append(x)
    return fcs, x


@dataclass
class AssistantOutput:
    """What the assistant computed on one batch's sampled RoIs (R in all, image by image).

    Attributes:
        rois: per image Boxes of the sampled RoIs (positives, then negatives).
        img, level, y, x, anchor: (R,) long provenance; level -1 for GT appended as proposals.
        fcs: the assistant's pre-ReLU fc outputs, each (R, D).
        losses: its detection losses {"loss_cls", "loss_box_reg"}.
    """

    rois: List[Boxes]
    img: Tensor
    level: Tensor
    y: Tensor
    x: Tensor
    anchor: Tensor
    fcs: List[Tensor]
    losses: Dict[str, Tensor]


class AssistantHead(nn.Module):
    """Faster R-CNN box head on the student's P3-P6, trained with its own detection losses.

    RoIAlignV2 7x7 with ``canonical_level=5`` so a RoI of scale s pools from P3 below 112 px,
    P4 to 224, P5 to 448 and P6 above, as mmdet's extractor over strides 8-64 (Detectron2's
    default canonical level would move every RoI one level up).

    Args:
        in_channels: student FPN channels.
        num_classes: foreground classes.
        strides: strides of ``in_features`` (default P3-P6: 8, 16, 32, 64).
        fc_dim: width of fc6 and fc7.
        batch_size_per_image: RoIs sampled per image (Faster R-CNN: 512).
        positive_fraction: fraction of positives among them (0.25).
        iou_threshold: IoU for a positive (0.5; lower is background).
        bbox_reg_weights: delta weights of the box predictor (Detectron2's (10, 10, 5, 5)).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strides: Sequence[int] = (8, 16, 32, 64),
        fc_dim: int = 1024,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        iou_threshold: float = 0.5,
        bbox_reg_weights: Tuple[float, ...] = (10.0, 10.0, 5.0, 5.0),
    ):
        super().__init__()
        self.num_classes = num_classes
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pooler = ROIPooler(
            output_size=7,
            scales=[1.0 / s for s in strides],
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
            canonical_box_size=224,
            canonical_level=5,
        )
        self.box_head = FastRCNNConvFCHead(
            ShapeSpec(channels=in_channels, height=7, width=7), conv_dims=[], fc_dims=[fc_dim] * 2
        )
        self.box_predictor = FastRCNNOutputLayers(
            ShapeSpec(channels=fc_dim),
            box2box_transform=Box2BoxTransform(weights=bbox_reg_weights),
            num_classes=num_classes,
        )
        self.matcher = Matcher([iou_threshold], [0, 1], allow_low_quality_matches=False)

    @torch.no_grad()
    def sample(self, proposals: AnchorProposals, targets: List[Instances]):
        """Faster R-CNN sampling with GT appended; provenance follows each sampled RoI.

        Returns:
            (per-image Instances with proposal_boxes, gt_classes, gt_boxes; provenance tensors
            img, level, y, x, anchor, each (R,)).
        """
        sampled, prov = [], []
        for i, (boxes, gt) in enumerate(zip(proposals.boxes, targets)):
            g = len(gt)
            gt_boxes = gt.gt_boxes.tensor.to(boxes.dtype)
            all_boxes = torch.cat([boxes, gt_boxes])
            neg1 = boxes.new_full((g,), -1, dtype=torch.long)
            meta = [torch.cat([v[i], neg1]) for v in (proposals.level, proposals.y)]
            meta += [torch.cat([v[i], neg1]) for v in (proposals.x, proposals.anchor)]
            if g:
                matched, labels = self.matcher(pairwise_iou(gt.gt_boxes, Boxes(all_boxes)))
                classes = gt.gt_classes[matched]
                classes[labels == 0] = self.num_classes
                targets_boxes = gt_boxes[matched]
            else:
                classes = torch.full_like(meta[0], self.num_classes)
                targets_boxes = torch.zeros_like(all_boxes)
            pos, neg = subsample_labels(
                classes, self.batch_size_per_image, self.positive_fraction, self.num_classes
            )
            idx = torch.cat([pos, neg])
            inst = Instances(gt.image_size)
            inst.proposal_boxes = Boxes(all_boxes[idx])
            inst.gt_classes = classes[idx]
            inst.gt_boxes = Boxes(targets_boxes[idx])
            sampled.append(inst)
            prov.append(torch.stack([torch.full_like(idx, i)] + [m[idx] for m in meta]))
        img, level, y, x, anchor = torch.cat(prov, 1).unbind(0)
        return sampled, (img, level, y, x, anchor)

    def forward(
        self,
        features: List[Tensor],
        proposals: AnchorProposals,
        targets: List[Instances],
    ) -> AssistantOutput:
        """Sample RoIs, pool ``features`` (the student's P3-P6, with gradient), predict, score.

        Args:
            features: per level (N, C, H, W), in the order of ``strides``.
            proposals: from :func:`anchor_proposals`.
            targets: per image GT Instances (gt_boxes, gt_classes).
        """
        sampled, (img, level, y, x, anchor) = self.sample(proposals, targets)
        rois = [s.proposal_boxes for s in sampled]
        pooled = self.pooler(features, rois)
        fcs, out = fc_features(self.box_head, pooled)
        predictions = self.box_predictor(out)
        losses = self.box_predictor.losses(predictions, sampled)
        return AssistantOutput(rois, img, level, y, x, anchor, fcs, losses)

    def load_from(self, box_head: nn.Module, box_predictor: Optional[nn.Module]) -> List[str]:
        """Copy a teacher's box head and predictor where names and shapes match.

        Returns:
            the keys skipped (absent or of another shape), for the caller to log.
        """
        skipped = []
        for own, src in ((self.box_head, box_head), (self.box_predictor, box_predictor)):
            if src is None:
                continue
            theirs, mine = src.state_dict(), own.state_dict()
            take = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
            skipped += [k for k in mine if k not in take]
            own.load_state_dict(take, strict=False)
        return skipped
