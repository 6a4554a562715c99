"""Slow reference of the FGD loss, straight from the paper's equations (a test helper).

Loops over images and boxes (like the official code's per-box loop), full-size elementwise
products and plain sums; nothing is vectorised or fused, so it checks ``d2kd.losses.fgd``
independently. It reuses the *parameters* of a fast ``FGDLevelLoss`` (align conv, GcBlocks) so
both compute the same function, but applies them its own way (full convolutions on the maps).
Import it with ``sys.path.insert(0, <tests/losses>)`` then ``import fgd_reference``.
"""

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ref_masks", "ref_attention", "ref_level_loss", "ReferenceFGDLoss"]


def ref_masks(
    gt_boxes: Sequence[Tensor],
    feat_hw: tuple[int, int],
    padded_hw: Optional[tuple[int, int]] = None,
    image_sizes: Optional[Sequence[tuple[int, int]]] = None,
    official_mapping: bool = False,
) -> tuple[Tensor, Tensor]:
    """M_fg, M_bg (N, H, W): per image, map the boxes, then paint each box (keeping the max)."""
    h, w = feat_hw
    n = len(gt_boxes)
    device = gt_boxes[0].device
    mask_fg = torch.zeros(n, h, w, device=device)
    mask_bg = torch.zeros(n, h, w, device=device)
    for i in range(n):
        b = gt_boxes[i].float()
        if official_mapping:
            ref_h, ref_w = float(image_sizes[i][0]), float(image_sizes[i][1])
            x1, x2 = b[:, 0] / ref_w * w, b[:, 2] / ref_w * w
            y1, y2 = b[:, 1] / ref_h * h, b[:, 3] / ref_h * h
        else:
            ref_h, ref_w = float(padded_hw[0]), float(padded_hw[1])
            x1, x2 = b[:, 0] * w / ref_w, b[:, 2] * w / ref_w
            y1, y2 = b[:, 1] * h / ref_h, b[:, 3] * h / ref_h
        wmin, wmax = x1.floor().long().tolist(), x2.ceil().long().tolist()
        hmin, hmax = y1.floor().long().tolist(), y2.ceil().long().tolist()
        for j in range(len(b)):
            area = (hmax[j] + 1 - hmin[j]) * (
                wmax[j] + 1 - wmin[j]
            )  # counts cells past the border too
            cells = mask_fg[i, max(hmin[j], 0) : hmax[j] + 1, max(wmin[j], 0) : wmax[j] + 1]
            torch.maximum(cells, torch.tensor(1.0 / area), out=cells)
        mask_bg[i] = (mask_fg[i] == 0).float()
        total = mask_bg[i].sum()
        if total > 0:
            mask_bg[i] /= total
    return mask_fg, mask_bg


def ref_attention(feat: Tensor, temp: float) -> tuple[Tensor, Tensor]:
    """A_S (N, H, W) and A_C (N, C) from the paper's equations."""
    n, c, h, w = feat.shape
    g_s = feat.abs().mean(dim=1)  # (N, H, W)
    a_s = h * w * torch.exp(g_s / temp) / torch.exp(g_s / temp).sum(dim=(1, 2), keepdim=True)
    g_c = feat.abs().mean(dim=(2, 3))  # (N, C)
    a_c = c * torch.exp(g_c / temp) / torch.exp(g_c / temp).sum(dim=1, keepdim=True)
    return a_s, a_c


def ref_gc(block: nn.Module, feat: Tensor) -> Tensor:
    """R(F) = F + channel_add(sum_hw softmax(conv_mask(F)) F), (N, C, H, W)."""
    n, c, h, w = feat.shape
    k = F.conv2d(feat, block.conv_mask.weight, block.conv_mask.bias)  # (N, 1, H, W)
    k = torch.softmax(k.reshape(n, 1, h * w), dim=2).reshape(n, 1, h, w)
    context = (feat * k).sum(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
    return feat + block.channel_add(context)


def ref_level_loss(
    module: nn.Module,
    feat_s: Tensor,
    feat_t: Tensor,
    gt_boxes: Sequence[Tensor],
    image_sizes: Optional[Sequence[tuple[int, int]]] = None,
    padded_hw: Optional[tuple[int, int]] = None,
) -> dict[str, Tensor]:
    """Same keys as FGDLevelLoss.forward, with ``module``'s parameters and hyper-parameters."""
    feat_t = feat_t.detach().float()
    feat_s = feat_s.float()
    if module.align is not None:
        feat_s = module.align(feat_s)
    n, c, h, w = feat_t.shape
    mask_fg, mask_bg = ref_masks(gt_boxes, (h, w), padded_hw, image_sizes, module.official_mapping)
    a_s_t, a_c_t = ref_attention(feat_t, module.temp)
    a_s_s, a_c_s = ref_attention(feat_s, module.temp)
    sq = (feat_s - feat_t) ** 2
    weight = a_s_t[:, None] * a_c_t[:, :, None, None]  # (N, C, H, W)
    fg = (mask_fg[:, None] * weight * sq).sum() / n
    bg = (mask_bg[:, None] * weight * sq).sum() / n
    at = (a_c_s - a_c_t).abs().sum() / n + (a_s_s - a_s_t).abs().sum() / n
    glob = ((ref_gc(module.gc_s, feat_s) - ref_gc(module.gc_t, feat_t)) ** 2).sum() / n
    loss = (
        module.alpha_fgd * fg
        + module.beta_fgd * bg
        + module.gamma_fgd * at
        + module.lambda_fgd * glob
    )
    return {"loss": loss, "fg": fg, "bg": bg, "at": at, "global": glob}


class ReferenceFGDLoss(nn.Module):
    """Counterpart of FGDLoss sharing its parameters; returns {key_prefix + level: loss}."""

    def __init__(self, fast: nn.Module) -> None:
        super().__init__()
        self.fast = fast

    def forward(self, student_feats, teacher_feats, gt_boxes, image_sizes=None, padded_hw=None):
        return {
            self.fast.key_prefix
            + k: ref_level_loss(
                m, student_feats[k], teacher_feats[k], gt_boxes, image_sizes, padded_hw
            )["loss"]
            for k, m in self.fast.levels.items()
        }
