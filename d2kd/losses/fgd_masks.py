"""FGD's foreground and background masks, built for every level at once without box loops.

The rules (Yang et al., CVPR'22, as the official code implements them): each GT box covers the
grid cells [floor(y1'), ceil(y2')] x [floor(x1'), ceil(x2')] inclusive, where primes are box
coordinates scaled to the grid, with value 1 / (number of cells in that range, counting cells cut
off by the border); where boxes overlap the largest value (smallest box) wins; the background
mask is 1 where no box is, normalised to sum 1 per image (uniform 1/HW for an image with no box).
"""

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HW", "fgd_masks", "fgd_multilevel_masks"]

HW = tuple[int, int]
_BITS = 52  # box ranks per int64 bitset word: a sum of distinct 2^b, b < 52, is exact in float64
_WORDS = 64  # bitset words per grid line at most, i.e. up to 3328 boxes per image
_TABLE = 1023 + _BITS  # value-table slots per (level, image, word), indexed by a float64 exponent


def _as_box_tensor(boxes: Any) -> Tensor:
    """Accept a (K, 4) tensor or a detectron2 ``Boxes`` (anything with a ``.tensor``)."""
    return boxes.tensor if hasattr(boxes, "tensor") else boxes


def fgd_multilevel_masks(
    gt_boxes: Sequence[Tensor],
    feat_hws: Sequence[HW],
    padded_hw: Optional[HW] = None,
    image_sizes: Optional[Sequence[HW]] = None,
    official_mapping: bool = False,
    device: Optional[torch.device] = None,
) -> list[tuple[Tensor, Tensor]]:
    """FGD's foreground and background masks for several feature sizes, with no loop over boxes.

    A box (x1, y1, x2, y2) maps to the grid as x' = x W / W_ref, y' = y H / H_ref and covers the
    cells [floor(y1'), ceil(y2')] x [floor(x1'), ceil(x2')] (inclusive) with the value 1 / (number
    of cells in that range). Cells past the border are dropped but still count in the area, so a
    border box sums to less than 1. Where boxes overlap, a cell keeps the largest value (the
    smallest box wins). Boxes are assumed to lie inside their image (detectron2 clips them).

    Method: per image and level the boxes are ranked by value, and each grid row and column gets
    the bitset of the ranks whose box spans it (a difference array and a cumulative sum; 52 ranks
    per int64 word). A cell's covering boxes are ``row_bits & col_bits``; the highest set bit is
    the winner. Cost O(K (H + W) + H W) per image instead of O(K H W); exact integer arithmetic.

    Args:
        gt_boxes: N tensors (K_i, 4) (or detectron2 ``Boxes``), xyxy in input pixels; K_i may be 0.
        feat_hws: L sizes (H_l, W_l) of the feature maps.
        padded_hw: (H_pad, W_pad), the padded batch input (``ImageList.tensor.shape[-2:]``). The
            default mapping uses (H_ref, W_ref) = padded_hw, i.e. box / stride.
        image_sizes: N pairs (h_i, w_i), each image's size before padding
            (``ImageList.image_sizes``); used only with ``official_mapping``.
        official_mapping: reproduce the official code, x' = x / w_i * W and y' = y / h_i * H (that
            float32 order), which stretches the masks of images smaller than the padded batch.
        device: where to build the masks; defaults to the boxes' device.

    Returns:
        L pairs (mask_fg, mask_bg), each (N, H_l, W_l) float32. mask_bg is 1[mask_fg == 0] divided
        by its per-image sum when that is nonzero (uniform 1 / (H_l W_l) for an image without
        boxes).
    """
    n = len(gt_boxes)
    if n == 0:
        raise ValueError("[FGD] gt_boxes is empty; expected one (K_i, 4) tensor per image")
    boxes = [_as_box_tensor(b) for b in gt_boxes]
    device = boxes[0].device if device is None else device
    boxes = [b.to(device=device, dtype=torch.float32).reshape(-1, 4) for b in boxes]
    hs, ws = tuple(int(hw[0]) for hw in feat_hws), tuple(int(hw[1]) for hw in feat_hws)
    counts = [len(b) for b in boxes]
    kmax, num_levels = max(counts), len(hs)
    if kmax == 0:
        return [
            (torch.zeros(n, h, w, device=device), torch.full((n, h, w), 1 / (h * w), device=device))
            for h, w in zip(hs, ws)
        ]
    words = -(-kmax // _BITS)  # int64 bitset words per grid line
    if words > _WORDS:
        raise ValueError(f"[FGD] at most {_WORDS * _BITS} boxes per image supported, got {kmax}")
    lay, kp = _layout(hs, ws, device), words * _BITS

    # Box edges on every level's grid, (axis x/y, L, N, Kp, lo/hi); padding rows get value 0.
    padded = nn.utils.rnn.pad_sequence(boxes, batch_first=True)
    edges = F.pad(padded, (0, 0, 0, kp - kmax)).view(n, kp, 2, 2).permute(3, 0, 1, 2)[:, None]
    if official_mapping:
        if image_sizes is None or len(image_sizes) != n:
            raise ValueError(f"[FGD] official_mapping needs {n} image_sizes, got {image_sizes!r}")
        img = torch.tensor([[float(s[1]), float(s[0])] for s in image_sizes], device=device)
        edges = edges / img.t()[:, None, :, None, None] * lay.feat  # the official float32 order
    else:
        if padded_hw is None:
            raise ValueError("[FGD] padded_hw is required unless official_mapping=True")
        ref = torch.tensor([float(padded_hw[1]), float(padded_hw[0])], device=device)
        edges = edges * lay.feat / ref[:, None, None, None, None]  # exact for integer strides
    lo, hi = edges[..., 0].floor().long(), edges[..., 1].ceil().long()  # (2, L, N, Kp), inclusive
    invalid = torch.arange(kp, device=device) >= torch.tensor(counts, device=device)[:, None]
    value = (1.0 / (hi - lo).add_(1).prod(dim=0)).masked_fill_(invalid, 0.0)  # (L, N, Kp)

    # Sorted position j = 52 * word + bit is the box's bit. Row/column bitsets: +2^bit at the box's
    # first line, -2^bit one past its last, then a cumulative sum (exact in int64).
    value, order = value.sort(dim=2)
    order = order.expand(2, -1, -1, -1)
    start = lay.word_start[:kp]
    lo = torch.minimum(lo.gather(3, order).clamp_min_(0), lay.size).add_(start)
    hi = torch.minimum(hi.gather(3, order).add_(1).clamp_min_(0), lay.size).add_(start)
    weight = (lay.bit_weight[:kp] * (value > 0)).expand_as(lo)  # (2, L, N, Kp)
    diff = torch.zeros(2, num_levels, n, words * lay.span, dtype=torch.long, device=device)
    diff.scatter_add_(3, lo, weight).scatter_add_(3, hi, -weight)
    bits = diff.view(2, num_levels, n, words, lay.span).cumsum_(dim=4)  # (x/y, L, N, words, line)

    # The ranks covering a cell: row bits & column bits, per level into one (N, words, T) buffer
    # (a loop over levels only; gathering all T cells at once measured slower on CPU).
    cols, rows = bits
    cells = torch.empty(n, words, lay.total, dtype=torch.long, device=device)
    o = 0
    for i, (h, w) in enumerate(zip(hs, ws)):
        out = cells[:, :, o : o + h * w].view(n, words, h, w)
        torch.bitwise_and(rows[i, :, :, :h, None], cols[i, :, :, None, :w], out=out)
        o += h * w
    # The highest set bit b of an int64 below 2^52 is its float64 exponent field (1023 + b; 0 for
    # 0), used as an index into a table with the value of rank b in slot 1023 + b and 0 in slot 0.
    index = cells.double().view(torch.long).bitwise_right_shift_(52)
    index = index.add_(_cell_base(hs, ws, n, words, device)).view(-1)
    table = value.new_zeros(num_levels, n, words, _TABLE)
    table[..., 1023:] = value.view(num_levels, n, words, _BITS)
    mask_fg = table.view(-1).index_select(0, index).view(n, words, lay.total)
    # Ranks ascend with the value, so across words the largest value is the winner.
    mask_fg = mask_fg.amax(dim=1) if words > 1 else mask_fg.view(n, lay.total)

    mask_bg = (mask_fg == 0).float()  # (N, T)
    out, o = [], 0
    for h, w in zip(hs, ws):
        fg, bg = mask_fg[:, o : o + h * w], mask_bg[:, o : o + h * w]
        bg.div_(bg.sum(dim=1, keepdim=True).clamp_min_(1.0))
        out.append((fg.view(n, h, w), bg.view(n, h, w)))
        o += h * w
    return out


class _Layout(NamedTuple):
    """Constants of fgd_multilevel_masks for L feature sizes (cached per sizes and device)."""

    feat: Tensor  # (2, L, 1, 1, 1) float32: widths, then heights
    size: Tensor  # (2, L, 1, 1) int64: the same
    span: int  # slots per bitset word in the difference array: max size + 1
    word_start: Tensor  # (_BITS * _WORDS,) int64: span * (sorted position // _BITS)
    bit_weight: Tensor  # (_BITS * _WORDS,) int64: 2^(sorted position % _BITS)
    total: int  # T = sum H W
    cell_level: Tensor  # (T,) level of each cell


@functools.lru_cache(maxsize=64)
def _layout(hs: tuple[int, ...], ws: tuple[int, ...], device: torch.device) -> _Layout:
    span, position = max(hs + ws) + 1, torch.arange(_BITS * _WORDS)
    sizes = torch.tensor([ws, hs]).view(2, len(hs), 1, 1)
    areas = [h * w for h, w in zip(hs, ws)]
    return _Layout(
        feat=sizes.float()[..., None].to(device),
        size=sizes.to(device),
        span=span,
        word_start=(position // _BITS * span).to(device),
        bit_weight=(torch.ones_like(position) << (position % _BITS)).to(device),
        total=sum(areas),
        cell_level=torch.cat([torch.full((a,), i) for i, a in enumerate(areas)]).to(device),
    )


@functools.lru_cache(maxsize=64)
def _cell_base(hs: tuple, ws: tuple, n: int, words: int, device: torch.device) -> Tensor:
    """(N, words, T) int64 offset of each cell's slice of a flat (L, N, words, _TABLE) table."""
    level = _layout(hs, ws, device).cell_level
    image = torch.arange(n, device=device)[:, None, None]
    word = torch.arange(words, device=device)[:, None]
    return ((level * n + image) * words + word) * _TABLE


def fgd_masks(
    gt_boxes: Sequence[Tensor],
    feat_hw: HW,
    padded_hw: Optional[HW] = None,
    image_sizes: Optional[Sequence[HW]] = None,
    official_mapping: bool = False,
    device: Optional[torch.device] = None,
) -> tuple[Tensor, Tensor]:
    """Masks for one feature size (H, W); see :func:`fgd_multilevel_masks` for rules and args.

    Returns:
        mask_fg, mask_bg: (N, H, W) float32 each.
    """
    args = (padded_hw, image_sizes, official_mapping, device)
    return fgd_multilevel_masks(gt_boxes, [feat_hw], *args)[0]
