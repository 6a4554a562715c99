"""LSHFM as KD terms: mimic the box head's fc7 (Faster R-CNN) or the cls tower's 3x3 patches
(RetinaNet) with the L2 / LSH / LSHL2 losses of :mod:`d2kd.losses.mimic`."""

from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from ...losses.mimic import MODES, MimicLoss
from ..adapters import conv_adapter, linear_adapter
from ..probes import ProbeInputs, cost_probe
from ..term import KDContext, KDTerm

__all__ = ["MASK_RULES", "MimicTermBase", "RCNNMimicTerm", "RetinaNetMimicTerm", "patches_at"]

MASK_RULES = ("fg", "official", "all")


def _module(model: nn.Module, path: str, role: str, owner: str) -> nn.Module:
    modules = dict(model.named_modules())
    if path not in modules:
        raise ValueError(f"[{owner}] the {role} ({type(model).__name__}) has no module '{path}'")
    return modules[path]


class MimicTermBase(KDTerm):
    """Shared parts: the loss (built in :meth:`setup`), the projection scale, logging.

    Subclasses set ``classifier_path`` (the teacher's final classifier, whose weight std scales
    the projection, read again once the teacher is loaded) and implement :meth:`features`.

    Args:
        mode: ``l2``, ``lsh`` or ``lshl2``.
        beta: loss weight (the paper's 7).
        hash_num: hash functions K; None means 4 D.
        std: projection scale; None (default) reads it from the teacher's classifier weights.
        seed: projection seed (the same on every rank).
        name: method name in loss keys: ``loss_<name>_l2``, ``loss_<name>_lsh``.
    """

    owner = "LSHFM"
    classifier_path = ""

    def __init__(
        self,
        mode: str = "lshl2",
        beta: float = 7.0,
        hash_num: Optional[int] = None,
        std: Optional[float] = None,
        seed: int = 0,
        name: str = "lshfm",
    ):
        super().__init__()
        self.mode, self.beta, self.hash_num = mode, beta, hash_num
        self.fixed_std, self.seed, self.name = std, seed, name
        self.loss: Optional[MimicLoss] = None

    def feature_dim(self, student: nn.Module, teacher: nn.Module) -> int:
        """Validate the models, build adapters, and return the teacher's feature size D."""
        raise NotImplementedError

    def setup(self, student: nn.Module, teacher: Optional[nn.Module]) -> None:
        if teacher is None:
            raise ValueError(f"[{self.owner}] needs a teacher (got teacher=None)")
        dim = self.feature_dim(student, teacher)
        self.loss = MimicLoss(dim, self.mode, self.beta, self.hash_num, seed=self.seed)
        self.on_teacher_loaded(teacher)  # a valid scale before loading; reset after it

    def on_teacher_loaded(self, teacher: Optional[nn.Module]) -> None:
        if self.loss.projection is None:
            return
        std = self.fixed_std
        if std is None:
            weight = _module(teacher, self.classifier_path, "teacher", self.owner).weight
            std = float(weight.detach().float().std())
        self.loss.projection.set_std(std)

    def features(self, ctx: KDContext) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """(student rows (M, D) with gradient, teacher rows (M, D), image ids (M,) or None)."""
        raise NotImplementedError

    def forward(self, ctx: KDContext) -> Dict[str, Tensor]:
        f_s, f_t, image_ids = self.features(ctx)
        parts = self.loss(f_s, f_t, image_ids, len(ctx.batched_inputs))
        try:
            get_event_storage().put_scalar(f"kd/{self.name}/rows", float(f_s.shape[0]))
        except AssertionError:
            pass
        return {f"loss_{self.name}_{k}": v for k, v in parts.items()}

    @classmethod
    def cost_probes(cls, inputs: ProbeInputs) -> Dict[str, Callable[[], Tensor]]:
        """``lshfm_<mode>`` for each mode: :class:`MimicLoss` (beta 7) on RetinaNet cls-tower rows.

        Rows: the 3x3 patches of a C-channel tower (D = 9 C: 2304 at 256 channels) at the
        locations the mask keeps, about 4 per GT box over P3-P7 (240 rows for 2 images of 30
        boxes); K = 4096 hash functions, the official RetinaNet run's.
        """
        n = 4 * inputs.shapes.boxes_per_image * inputs.shapes.batch
        dim = 9 * inputs.shapes.channels
        return {f"lshfm_{mode}": _mimic_probe(inputs, mode, n, dim) for mode in MODES}


def _mimic_probe(inputs: ProbeInputs, mode: str, n: int, dim: int) -> Callable[[], Tensor]:
    loss = MimicLoss(dim, mode=mode, beta=7.0, hash_num=4096).to(inputs.device)
    f_s, f_t = inputs.rows(n, dim, seed=1)
    return cost_probe(lambda: sum(loss(f_s, f_t).values()), f_s)


class RCNNMimicTerm(MimicTermBase):
    """LSHFM on Faster R-CNN: mimic the post-ReLU fc7 of the box head on the student's RoIs.

    The student's sampled RoIs (after ``label_and_sample_proposals``) are read from the positional
    inputs of its ``roi_heads.box_pooler`` and its fc7 from ``roi_heads.box_head``; the teacher's
    pooler and box head run on the same boxes over its own FPN features, under no_grad. A linear
    adapter maps the student's fc7 to the teacher's size only if they differ (LSHFM has none).
    Rows are averaged over all RoIs of the batch, as the official code. Zero RoIs give 0.
    """

    student_taps = ("roi_heads.box_pooler", "roi_heads.box_head")
    classifier_path = "roi_heads.box_predictor.cls_score"

    def feature_dim(self, student: nn.Module, teacher: nn.Module) -> int:
        dims = []
        for role, model in (("student", student), ("teacher", teacher)):
            head = _module(model, "roi_heads.box_head", role, self.owner)
            _module(model, "roi_heads.box_pooler", role, self.owner)
            dims.append(head.output_shape.channels)
        self.adapter = linear_adapter(dims[0], dims[1])
        self.in_features = list(teacher.roi_heads.box_in_features)
        return dims[1]

    def features(self, ctx: KDContext):
        if "roi_heads.box_pooler" not in ctx.student_inputs:
            raise RuntimeError(f"[{self.owner}] the student's roi_heads.box_pooler did not run")
        _, boxes = ctx.student_inputs["roi_heads.box_pooler"][:2]
        f_s = self.adapter(ctx.student_outputs["roi_heads.box_head"].flatten(1))
        t_feats = ctx.teacher_features()
        with torch.no_grad():
            heads = ctx.teacher.roi_heads
            pooled = heads.box_pooler([t_feats[f] for f in self.in_features], list(boxes))
            f_t = heads.box_head(pooled).flatten(1)
        if f_s.shape != f_t.shape:
            raise ValueError(
                f"[{self.owner}] fc7 rows differ: student {tuple(f_s.shape)} vs teacher "
                f"{tuple(f_t.shape)}"
            )
        return f_s, f_t, None  # no image ids: a mean over every sampled RoI of the batch


def patches_at(feat: Tensor, n: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """3x3 zero-padded patches at chosen locations: ``F.unfold(feat, 3, padding=1)`` rows.

    Args:
        feat: (N, C, H, W) map.
        n, y, x: (M,) int64 image, row and column of each location.

    Returns:
        (M, 9 C), ordered as unfold's channels (c, ky, kx): the input of a 3x3 conv there.
    """
    padded = F.pad(feat, (1, 1, 1, 1))
    taps = [padded[n, :, y + dy, x + dx] for dy in range(3) for dx in range(3)]  # 9 x (M, C)
    return torch.stack(taps, dim=2).flatten(1)


class RetinaNetMimicTerm(MimicTermBase):
    """LSHFM on RetinaNet: mimic the cls tower's 3x3 patches (the input of ``cls_score``).

    Per FPN level the student's tower output (``head.cls_subnet``, one call per level) goes
    through a 1x1 conv adapter to the teacher's tower width (when they differ), and the 3x3
    patches of student and teacher towers (D = 9 C_t, 2304 for 256 channels) are taken at the
    masked locations only (never the full unfold). Rows are ordered as the anchors (image, level,
    h, w), averaged per image, then over the images with rows (the official reduction).

    Location masks, from the student's anchor matcher (labels 1 fg, 0 bg, -1 ignore) over the A
    anchors of each location:

    - ``fg`` (default): at least one anchor is foreground, i.e. the teacher's features where it
      detects objects. Our reading of the official rule's intent; it also keeps the background's
      thousands of locations from diluting the mean.
    - ``official``: the rule as the official code computes it: not all A anchors ignored, which
      keeps background too.
    - ``all``: every location.

    Args:
        mask: one of :data:`MASK_RULES`.
        (the rest as :class:`MimicTermBase`.)
    """

    student_taps = ("head.cls_subnet",)
    classifier_path = "head.cls_score"

    def __init__(self, *args, mask: str = "fg", **kwargs):
        super().__init__(*args, **kwargs)
        if mask not in MASK_RULES:
            raise ValueError(f"[{self.owner}] mask must be one of {MASK_RULES}, got '{mask}'")
        self.mask = mask

    def feature_dim(self, student: nn.Module, teacher: nn.Module) -> int:
        widths = []
        for role, model in (("student", student), ("teacher", teacher)):
            convs = [m for m in _module(model, "head.cls_subnet", role, self.owner).modules()]
            convs = [m for m in convs if isinstance(m, nn.Conv2d)]
            if not convs:
                raise ValueError(f"[{self.owner}] the {role}'s head.cls_subnet has no conv")
            widths.append(convs[-1].out_channels)
        s_levels, t_levels = list(student.head_in_features), list(teacher.head_in_features)
        if s_levels != t_levels:
            raise ValueError(
                f"[{self.owner}] student levels {s_levels} and teacher levels {t_levels} differ"
            )
        self.levels = t_levels
        self.adapter = conv_adapter(widths[0], widths[1])
        return 9 * widths[1]

    def location_masks(self, ctx: KDContext, maps: List[Tensor]) -> List[Tensor]:
        """Per level, (N, H*W) bool: the locations to distil (see the class docstring)."""
        n_img = maps[0].shape[0]
        if self.mask == "all":
            return [m.new_ones(n_img, m.shape[-2] * m.shape[-1], dtype=torch.bool) for m in maps]
        student = ctx.student
        # The student's own labelling (Detectron2's RetinaNet.label_anchors): per image (R,)
        # with -1 ignored, 0..K-1 a class, K background; R = sum_l H_l W_l A in anchor order.
        labels, _ = student.label_anchors(student.anchor_generator(maps), ctx.gt_instances)
        labels = torch.stack(labels)
        if self.mask == "fg":
            keep = (labels >= 0) & (labels < student.num_classes)
        else:  # official: sum of torchvision's matched idx > -2 A, i.e. not all ignored
            keep = labels != -1
        sizes = [m.shape[-2] * m.shape[-1] for m in maps]
        num_anchors = labels.shape[1] // sum(sizes)
        return [
            per_level.reshape(n_img, -1, num_anchors).any(dim=2)
            for per_level in keep.split([s * num_anchors for s in sizes], dim=1)
        ]

    def features(self, ctx: KDContext):
        s_maps = ctx.student_all_outputs.get("head.cls_subnet", [])
        if len(s_maps) != len(self.levels):
            raise RuntimeError(
                f"[{self.owner}] expected {len(self.levels)} calls of the student's "
                f"head.cls_subnet (levels {self.levels}), got {len(s_maps)}"
            )
        t_feats = ctx.teacher_features()
        masks = self.location_masks(ctx, s_maps)
        per_image = sum(m.shape[1] for m in masks)  # locations per image, all levels
        rows_s, rows_t, ids, keys, offset = [], [], [], [], 0
        for level, fs, mask in zip(self.levels, s_maps, masks):
            with torch.no_grad():
                ft = ctx.teacher.head.cls_subnet(t_feats[level])
            if fs.shape[0] != ft.shape[0] or fs.shape[-2:] != ft.shape[-2:]:
                raise ValueError(
                    f"[{self.owner}] level '{level}': student tower {tuple(fs.shape)} and "
                    f"teacher tower {tuple(ft.shape)} differ in batch or spatial size"
                )
            n, loc = mask.nonzero(as_tuple=True)
            y, x = loc // fs.shape[-1], loc % fs.shape[-1]
            rows_s.append(patches_at(self.adapter(fs), n, y, x))
            rows_t.append(patches_at(ft, n, y, x))
            ids.append(n)
            keys.append(n * per_image + offset + loc)
            offset += mask.shape[1]
        order = torch.argsort(torch.cat(keys))  # anchor order: image, then level, h, w
        return torch.cat(rows_s)[order], torch.cat(rows_t)[order], torch.cat(ids)[order]
