"""FGD: Focal and Global Knowledge Distillation for detectors (Yang et al., CVPR 2022).

Paper: https://arxiv.org/abs/2111.11837 (official code: https://github.com/yzd-v/FGD).

Per FPN level, with student/teacher maps F^S, F^T of shape (N, C, H, W):

- attention (:func:`fgd_attention`): A_S = H*W softmax_hw(mean_c|F| / T) and
  A_C = C softmax_c(mean_hw|F| / T);
- masks (:func:`fgd_masks`): M_fg(h, w) = the largest 1/area of the GT boxes covering the cell
  (the smallest box wins); M_bg = 1[M_fg == 0], normalised to sum 1 per image;
- focal loss (:func:`fgd_focal_loss`): L_fg = (1/N) sum M_fg A_S^T A_C^T (F^S - F^T)^2, and L_bg
  likewise with M_bg (only the teacher's attention weights them);
- attention loss (:func:`fgd_attention_loss`):
  (1/N) sum |A_C^S - A_C^T| + (1/N) sum |A_S^S - A_S^T|;
- global loss (:func:`fgd_global_loss`): (1/N) sum (R_s(F^S) - R_t(F^T))^2, R(F) = F + GcBlock(F);
- total: alpha L_fg + beta L_bg + gamma L_at + lambda L_global (sums over n, c, h, w, divided by N).

All loss math runs in fp32 (autocast is disabled inside) and without host syncs. The teacher map is
detached; the teacher-side GcBlock is still trainable and gets gradient from L_global only, as in
the official code.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fgd_masks import HW, _as_box_tensor, fgd_masks, fgd_multilevel_masks

__all__ = [
    "RETINANET_HPARAMS",
    "RCNN_HPARAMS",
    "fgd_masks",
    "fgd_multilevel_masks",
    "fgd_attention",
    "fgd_focal_loss",
    "fgd_attention_loss",
    "fgd_global_loss",
    "GlobalContextBlock",
    "FGDLevelLoss",
    "FGDLoss",
]

# The official configs (configs/distillers/fgd/*). FGDLevelLoss defaults to the official *class*
# defaults, which differ from the RetinaNet/GFL configs in gamma (1e-3 vs 5e-4).
RETINANET_HPARAMS = dict(temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6)
RCNN_HPARAMS = dict(temp=0.5, alpha_fgd=5e-5, beta_fgd=2.5e-5, gamma_fgd=5e-5, lambda_fgd=5e-7)


def fgd_attention(feat: Tensor, temp: float) -> tuple[Tensor, Tensor]:
    """Spatial and channel attention of FGD.

    Args:
        feat: (N, C, H, W) feature map.
        temp: softmax temperature T.

    Returns:
        spatial: (N, H, W), H*W softmax over (h, w) of mean_c |F| / T (mean value 1).
        channel: (N, C), C softmax over c of mean_hw |F| / T (mean value 1).
    """
    n, c, h, w = feat.shape
    flat = feat.reshape(n, c, h * w)
    mean_c = torch.linalg.vector_norm(flat, ord=1, dim=1) / c  # mean |F|, no |F| temporary
    mean_hw = torch.linalg.vector_norm(flat, ord=1, dim=2) / (h * w)
    spatial = (h * w) * F.softmax(mean_c / temp, dim=1)
    return spatial.reshape(n, h, w), c * F.softmax(mean_hw / temp, dim=1)


def _focal_from_sums(e: Tensor, mask_fg: Tensor, mask_bg: Tensor, spatial_t: Tensor):
    """L_fg, L_bg from e (N, HW) = sum_c A_C^T D^2: two dot products over (N, HW)."""
    n = e.shape[0]
    weighted = (spatial_t.reshape(n, -1) * e).reshape(-1)
    return mask_fg.reshape(-1).dot(weighted) / n, mask_bg.reshape(-1).dot(weighted) / n


def _global_from_sums(r2: Tensor, r1: Tensor, delta: Tensor, hw: int) -> Tensor:
    """sum (D + delta_c)^2 / N = sum_c [r2 + delta (2 r1 + HW delta)] / N, r2, r1 = sum_hw D^2, D.

    R_s(F^S) - R_t(F^T) = D + delta is never materialised. Exact at init (delta = 0); fp32
    cancellation would matter only if the GcBlocks' offset delta absorbed nearly all of D.
    """
    return (r2 + delta * (2.0 * r1 + hw * delta)).sum() / r2.shape[0]


def fgd_focal_loss(
    feat_s: Tensor,
    feat_t: Tensor,
    mask_fg: Tensor,
    mask_bg: Tensor,
    spatial_t: Tensor,
    channel_t: Tensor,
) -> tuple[Tensor, Tensor]:
    """Focal feature loss, both parts weighted by the teacher's attention.

    The channel sum is contracted first (one bmm to e (N, HW)), so neither part materialises an
    (N, C, H, W) weight; alpha L_fg + beta L_bg is the fused weighted sum.

    Args:
        feat_s: (N, C, H, W) student map, already aligned to the teacher's channels.
        feat_t: (N, C, H, W) teacher map (detach it before calling).
        mask_fg, mask_bg: (N, H, W) masks from :func:`fgd_masks`.
        spatial_t: (N, H, W) teacher spatial attention A_S^T.
        channel_t: (N, C) teacher channel attention A_C^T.

    Returns:
        fg: scalar, sum over (n, c, h, w) of M_fg A_S^T A_C^T (F^S - F^T)^2, divided by N.
        bg: scalar, the same with M_bg.
    """
    n, c, h, w = feat_s.shape
    diff = (feat_s - feat_t).reshape(n, c, h * w)
    e = torch.bmm(channel_t[:, None, :], diff * diff)[:, 0]
    return _focal_from_sums(e, mask_fg, mask_bg, spatial_t)


def fgd_attention_loss(
    spatial_s: Tensor, channel_s: Tensor, spatial_t: Tensor, channel_t: Tensor
) -> Tensor:
    """Attention loss: (1/N) sum |A_C^S - A_C^T| + (1/N) sum |A_S^S - A_S^T| (a scalar).

    Args:
        spatial_s, spatial_t: (N, H, W) spatial attention of student and teacher.
        channel_s, channel_t: (N, C) channel attention of student and teacher.
    """
    n = spatial_s.shape[0]
    return ((channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()) / n


def fgd_global_loss(feat_s: Tensor, feat_t: Tensor, add_s: Tensor, add_t: Tensor) -> Tensor:
    """Global loss: (1/N) sum over (n, c, h, w) of (R_s(F^S) - R_t(F^T))^2, R(F) = F + add.

    Args:
        feat_s, feat_t: (N, C, H, W) student and teacher maps.
        add_s, add_t: (N, C) outputs of the student and teacher :class:`GlobalContextBlock`.
    """
    n, c, h, w = feat_s.shape
    diff = (feat_s - feat_t).reshape(n, c, h * w)
    return _global_from_sums((diff * diff).sum(2), diff.sum(2), add_s - add_t, h * w)


class _StudentStats(torch.autograd.Function):
    """Every reduction of the student map S that a level needs, with a fused backward.

    Inputs: S, T (N, C, P), P = H*W (T constant); a = A_C^T (N, C) (constant); the student
    GcBlock's conv_mask weight w (C,) and bias b (1,). Outputs, with D = S - T:
    e (N, P) = sum_c a D^2; r2, r1 (N, C) = sum_p D^2, sum_p D; g_s (N, P) = mean_c |S|;
    g_c (N, C) = mean_p |S|; ctx (N, C) = sum_p softmax_p(w.S + b) S.

    Autograd through the same tensor code allocates about 20 (N, C, P) temporaries in backward;
    on CPU each fresh allocation of that size costs more than the arithmetic on it. Here forward
    allocates one such buffer and backward two (one is the gradient), using outer products with
    in-place baddbmm/addcmul.
    """

    @staticmethod
    def forward(ctx, s, t, a, w, b):  # noqa: D102
        n, c, p = s.shape
        d = torch.sub(s, t)
        r1 = d.sum(dim=2)
        sq = d.mul_(d)
        e, r2 = torch.bmm(a[:, None, :], sq)[:, 0], sq.sum(dim=2)
        del d, sq
        g_s = torch.linalg.vector_norm(s, ord=1, dim=1) / c
        g_c = torch.linalg.vector_norm(s, ord=1, dim=2) / p
        prob = F.softmax(torch.bmm(w.expand(n, 1, c), s)[:, 0] + b, dim=1)  # matmul copies S^T
        context = torch.bmm(s, prob[:, :, None])[:, :, 0]
        ctx.save_for_backward(s, t, a, w, prob, context)  # D is recomputed, not kept alive
        return e, r2, r1, g_s, g_c, context

    @staticmethod
    def backward(ctx, g_e, g_r2, g_r1, g_s, g_c, g_ctx):  # noqa: D102
        s, t, a, w, prob, context = ctx.saved_tensors
        n, c, p = s.shape
        zero_p, zero_c = s.new_zeros(n, p), s.new_zeros(n, c)
        g_e, g_s = (zero_p if g is None else g for g in (g_e, g_s))
        g_r2, g_r1, g_c, g_ctx = (zero_c if g is None else g for g in (g_r2, g_r1, g_c, g_ctx))
        buf = torch.sub(s, t)
        # e, r2, r1: dS = D * 2 (a[c] g_e[p] + g_r2[c]) + g_r1[c].
        grad = torch.baddbmm(2 * g_r2[:, :, None], 2 * a[:, :, None], g_e[:, None, :]).mul_(buf)
        # ctx = S prob, prob = softmax(w.S + b): dS += g_ctx[c] prob[p] + w[c] g_k[p], where
        # g_k = prob (u - v), u[p] = sum_c g_ctx S, v = sum_c g_ctx ctx.
        u = torch.bmm(g_ctx[:, None, :], s)[:, 0]
        g_k = prob * (u - (g_ctx * context).sum(dim=1, keepdim=True))
        lhs = torch.stack((g_r1, g_ctx, w.expand(n, c)), dim=2)  # (N, C, 3)
        rhs = torch.stack((torch.ones_like(prob), prob, g_k), dim=1)  # (N, 3, P)
        grad.baddbmm_(lhs, rhs)
        # mean |S|: dS += sign(S) (g_c[c] / P + g_s[p] / C), with sign(S) in the D buffer.
        sign = torch.sign(s, out=buf)
        grad.addcmul_(sign, (g_c / p)[:, :, None]).addcmul_(sign, (g_s / c)[:, None, :])
        g_w = torch.bmm(s, g_k[:, :, None]).sum(dim=0)[:, 0]
        return grad, None, None, g_w, g_k.sum().reshape(1)


class GlobalContextBlock(nn.Module):
    """GcBlock of FGD's global loss; ``forward`` returns the per-channel term added to the map.

    ``conv_mask`` (C -> 1): kaiming normal, fan_in (std sqrt(2/C)), bias 0. ``channel_add``: conv
    C -> C//2 (PyTorch default init), LayerNorm([C//2, 1, 1]) (weight 1, bias 0), ReLU, conv
    C//2 -> C with zero weight and bias, so the block adds exactly 0 at construction.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"[FGD] GlobalContextBlock needs at least 2 channels, got {channels}")
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=1),
            nn.LayerNorm([channels // 2, 1, 1]),
            nn.ReLU(),
            nn.Conv2d(channels // 2, channels, kernel_size=1),
        )
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, feat: Tensor) -> Tensor:
        """Args: feat (N, C, H, W). Returns: (N, C), channel_add(sum_hw softmax(conv_mask(F)) F)."""
        n, c, h, w = feat.shape
        flat = feat.reshape(n, c, h * w)
        weight = self.conv_mask.weight.reshape(1, 1, c).expand(n, 1, c)
        prob = F.softmax(torch.bmm(weight, flat) + self.conv_mask.bias, dim=2)  # (N, 1, HW)
        return self.transform(torch.bmm(flat, prob.transpose(1, 2))[:, :, 0])

    def transform(self, context: Tensor) -> Tensor:
        """Args: context (N, C), the attention-pooled map. Returns: (N, C), channel_add(context)."""
        return self.channel_add(context[:, :, None, None]).flatten(1)


class FGDLevelLoss(nn.Module):
    """FGD loss of one FPN level, with its own ``align`` conv (when needed) and two GcBlocks.

    Defaults are the official class defaults; the official configs use :data:`RETINANET_HPARAMS`
    (RetinaNet/GFL: gamma 5e-4) and :data:`RCNN_HPARAMS` (Faster/Mask/Cascade R-CNN: alpha 5e-5,
    beta 2.5e-5, gamma 5e-5, lambda 5e-7). ``align`` (1x1 conv C_s -> C_t, PyTorch init) exists only
    if the channel counts differ. ``gc_t`` (teacher side) is trainable and receives gradient only
    through L_global; the teacher map itself is detached.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        temp: float = 0.5,
        alpha_fgd: float = 1e-3,
        beta_fgd: float = 5e-4,
        gamma_fgd: float = 1e-3,
        lambda_fgd: float = 5e-6,
        official_mapping: bool = False,
        name: str = "",
    ) -> None:
        super().__init__()
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.temp, self.official_mapping, self.name = temp, official_mapping, name
        self.alpha_fgd, self.beta_fgd = alpha_fgd, beta_fgd
        self.gamma_fgd, self.lambda_fgd = gamma_fgd, lambda_fgd
        self.align: Optional[nn.Conv2d] = None
        if student_channels != teacher_channels:
            self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
        self.gc_s = GlobalContextBlock(teacher_channels)
        self.gc_t = GlobalContextBlock(teacher_channels)

    def check_inputs(self, feat_s: Tensor, feat_t: Tensor, gt_boxes: Sequence[Tensor]) -> None:
        """Raise ValueError("[FGD] level '<name>': ... expected ..., got ...") on a bad shape."""
        where = f"[FGD] level '{self.name}'"
        if feat_s.dim() != 4 or feat_s.shape[1] != self.student_channels:
            expected = f"(N, {self.student_channels}, H, W)"
            raise ValueError(
                f"{where}: student feature expected {expected}, got {tuple(feat_s.shape)}"
            )
        n, _, h, w = feat_s.shape
        if tuple(feat_t.shape) != (n, self.teacher_channels, h, w):
            expected = (n, self.teacher_channels, h, w)
            raise ValueError(
                f"{where}: teacher feature expected {expected}, got {tuple(feat_t.shape)}"
            )
        if len(gt_boxes) != n:
            raise ValueError(f"{where}: expected {n} gt_boxes (one per image), got {len(gt_boxes)}")
        for i, b in enumerate(gt_boxes):
            shape = tuple(_as_box_tensor(b).shape)
            if len(shape) != 2 or shape[1] != 4:
                raise ValueError(f"{where}: gt_boxes[{i}] expected (K, 4), got {shape}")

    def forward(
        self,
        feat_s: Tensor,
        feat_t: Tensor,
        gt_boxes: Sequence[Tensor],
        image_sizes: Optional[Sequence[HW]] = None,
        padded_hw: Optional[HW] = None,
        masks: Optional[tuple[Tensor, Tensor]] = None,
    ) -> dict[str, Tensor]:
        """Compute the level's loss.

        Args:
            feat_s: (N, C_s, H, W) student map, any float dtype (computed in fp32).
            feat_t: (N, C_t, H, W) teacher map; detached here.
            gt_boxes: N tensors (K_i, 4), xyxy in input pixels (the resized, padded frame).
            image_sizes: N pairs (h_i, w_i) before padding; needed only with official_mapping.
            padded_hw: (H_pad, W_pad) of the padded batch; needed unless official_mapping.
            masks: precomputed (mask_fg, mask_bg), each (N, H, W) (:func:`fgd_multilevel_masks`).

        Returns:
            "loss": scalar alpha fg + beta bg + gamma at + lambda global (with gradient);
            "fg", "bg", "at", "global": the unweighted parts, detached.
        """
        self.check_inputs(feat_s, feat_t, gt_boxes)
        with torch.autocast(device_type=feat_s.device.type, enabled=False):
            feat_s, feat_t = feat_s.float(), feat_t.detach().float()
            if self.align is not None:
                feat_s = self.align(feat_s)
            n, c, h, w = feat_t.shape
            if masks is None:
                args = (padded_hw, image_sizes, self.official_mapping, feat_s.device)
                masks = fgd_masks(gt_boxes, (h, w), *args)
            spatial_t, channel_t = fgd_attention(feat_t, self.temp)
            conv = self.gc_s.conv_mask
            flat_s, flat_t = feat_s.reshape(n, c, h * w), feat_t.reshape(n, c, h * w)
            e, r2, r1, mean_c, mean_hw, context = _StudentStats.apply(
                flat_s, flat_t, channel_t, conv.weight.flatten(), conv.bias
            )
            spatial_s = (h * w) * F.softmax(mean_c / self.temp, dim=1)  # as in fgd_attention
            channel_s = c * F.softmax(mean_hw / self.temp, dim=1)
            fg, bg = _focal_from_sums(e, masks[0], masks[1], spatial_t)
            at = fgd_attention_loss(spatial_s.view(n, h, w), channel_s, spatial_t, channel_t)
            delta = self.gc_s.transform(context) - self.gc_t(feat_t)
            glob = _global_from_sums(r2, r1, delta, h * w)
            loss = self.alpha_fgd * fg + self.beta_fgd * bg
            loss = loss + self.gamma_fgd * at + self.lambda_fgd * glob
        parts = {"fg": fg, "bg": bg, "at": at, "global": glob}
        return {"loss": loss, **{k: v.detach() for k, v in parts.items()}}


class FGDLoss(nn.Module):
    """FGD over several FPN levels: one :class:`FGDLevelLoss` per level in ``self.levels``.

    Loss keys: ``f"{key_prefix}{level}"`` (default ``loss_fgd_p3`` ... ``loss_fgd_p7``), each the
    level's weighted total. :meth:`compute` also returns the detached parts, keyed
    ``"<level>/fg"``, ``"<level>/bg"``, ``"<level>/at"`` and ``"<level>/global"``.
    """

    def __init__(
        self,
        student_channels: Mapping[str, int],
        teacher_channels: Mapping[str, int],
        key_prefix: str = "loss_fgd_",
        official_mapping: bool = False,
        **level_kwargs: Any,
    ) -> None:
        """Args:
        student_channels, teacher_channels: channels per level, e.g. {"p3": 256, ..., "p7": 256}.
        key_prefix: prefix of the returned loss keys.
        official_mapping: map boxes with the unpadded image sizes, as the official code does.
        **level_kwargs: for every :class:`FGDLevelLoss` (temp, alpha_fgd, ..., lambda_fgd).
        """
        super().__init__()
        if set(student_channels) != set(teacher_channels):
            raise ValueError(
                f"[FGD] student levels {sorted(student_channels)} differ from teacher levels "
                f"{sorted(teacher_channels)}"
            )
        self.key_prefix, self.official_mapping = key_prefix, official_mapping
        kwargs = dict(level_kwargs, official_mapping=official_mapping)
        self.levels = nn.ModuleDict(
            {
                k: FGDLevelLoss(c, teacher_channels[k], name=k, **kwargs)
                for k, c in student_channels.items()
            }
        )

    def compute(
        self,
        student_feats: Mapping[str, Tensor],
        teacher_feats: Mapping[str, Tensor],
        gt_boxes: Sequence[Tensor],
        image_sizes: Optional[Sequence[HW]] = None,
        padded_hw: Optional[HW] = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Like :meth:`forward`, and also return the detached parts {"<level>/<part>": scalar}."""
        for level, module in self.levels.items():
            for side, feats in (("student", student_feats), ("teacher", teacher_feats)):
                if level not in feats:
                    raise ValueError(
                        f"[FGD] level '{level}' missing from {side} features; got {sorted(feats)}"
                    )
            module.check_inputs(student_feats[level], teacher_feats[level], gt_boxes)
        device = teacher_feats[next(iter(self.levels))].device
        hws = [tuple(teacher_feats[level].shape[-2:]) for level in self.levels]
        with torch.autocast(device_type=device.type, enabled=False):  # all levels in one pass
            args = (padded_hw, image_sizes, self.official_mapping, device)
            all_masks = fgd_multilevel_masks(gt_boxes, hws, *args)
        losses, parts = {}, {}
        for (level, module), masks in zip(self.levels.items(), all_masks):
            feats = (student_feats[level], teacher_feats[level])
            out = module(*feats, gt_boxes, image_sizes, padded_hw, masks)
            losses[self.key_prefix + level] = out.pop("loss")
            parts.update({f"{level}/{k}": v for k, v in out.items()})
        return losses, parts

    def forward(
        self,
        student_feats: Mapping[str, Tensor],
        teacher_feats: Mapping[str, Tensor],
        gt_boxes: Sequence[Tensor],
        image_sizes: Optional[Sequence[HW]] = None,
        padded_hw: Optional[HW] = None,
    ) -> dict[str, Tensor]:
        """One weighted FGD loss per level (the caller sums them).

        Args:
            student_feats: {level: (N, C_s, H_l, W_l)}; extra keys are ignored.
            teacher_feats: {level: (N, C_t, H_l, W_l)}.
            gt_boxes: N tensors (K_i, 4) (or ``Boxes``), xyxy in the resized-image pixel frame.
            image_sizes: N (h_i, w_i) before padding (``ImageList.image_sizes``); official mapping.
            padded_hw: ``tuple(ImageList.tensor.shape[-2:])``; the default mapping.

        Returns:
            {f"{key_prefix}{level}": scalar} for every level.
        """
        return self.compute(student_feats, teacher_feats, gt_boxes, image_sizes, padded_hw)[0]
