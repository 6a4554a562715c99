"""Tests of d2kd.losses.fgd: hand-derived values, loop reference, gradients, dtypes, errors."""

import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from d2kd.losses.fgd import (
    RCNN_HPARAMS,
    RETINANET_HPARAMS,
    FGDLevelLoss,
    FGDLoss,
    GlobalContextBlock,
    _StudentStats,
    fgd_attention,
    fgd_attention_loss,
    fgd_focal_loss,
    fgd_global_loss,
    fgd_masks,
    fgd_multilevel_masks,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fgd_reference as ref  # noqa: E402


def assert_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Max abs difference within ``rel`` of the largest expected magnitude (normwise)."""
    scale = expected.detach().abs().max().clamp_min(1e-12)
    err = (actual.detach() - expected.detach()).abs().max()
    assert err <= rel * scale, f"max abs err {err.item():.3g} > {rel} * {scale.item():.3g}"


def boxes_t(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# --------------------------------------------------------------------------------------------------
# (a) hand-derived masks


def test_mask_border_box_sums_below_one():
    """4x4 grid, stride 8. Box (16, 16, 32, 32) -> x', y' in [2, 4] -> cells 2..4, area 3*3 = 9.

    Row/col 4 lies past the border: only the 2x2 cells [2:4, 2:4] get 1/9, so the mask sums to
    4/9 < 1.
    The 12 other cells are background, 1/12 each.
    """
    fg, bg = fgd_masks([boxes_t([16, 16, 32, 32])], (4, 4), padded_hw=(32, 32))
    expected = torch.zeros(1, 4, 4)
    expected[0, 2:, 2:] = 1 / 9
    torch.testing.assert_close(fg, expected, rtol=0, atol=0)
    assert fg.sum().item() == pytest.approx(4 / 9)
    torch.testing.assert_close(bg, (expected == 0).float() / 12, rtol=0, atol=0)


@pytest.mark.parametrize("reverse", [False, True])
def test_mask_overlap_smallest_box_wins(reverse):
    """8x8 grid, stride 8. Big box (0, 0, 40, 40) -> cells 0..5, value 1/36.

    Small box (8, 8, 16, 16) -> cells 1..2, value 1/4. Where they overlap the larger value (the
    smaller box) wins, whatever the box order.
    """
    rows = [[0, 0, 40, 40], [8, 8, 16, 16]]
    fg, bg = fgd_masks([boxes_t(*(rows[::-1] if reverse else rows))], (8, 8), padded_hw=(64, 64))
    expected = torch.zeros(1, 8, 8)
    expected[0, :6, :6] = 1 / 36
    expected[0, 1:3, 1:3] = 1 / 4
    torch.testing.assert_close(fg, expected, rtol=0, atol=0)
    assert bg[0, :6, :6].abs().sum() == 0 and bg.sum().item() == pytest.approx(1.0)


def test_mask_fractional_box_floor_ceil():
    """Box (4, 4, 12, 12) at stride 8 -> [0.5, 1.5] -> floor 0, ceil 2 -> cells 0..2, value 1/9."""
    fg, _ = fgd_masks([boxes_t([4, 4, 12, 12])], (4, 4), padded_hw=(32, 32))
    expected = torch.zeros(1, 4, 4)
    expected[0, :3, :3] = 1 / 9
    torch.testing.assert_close(fg, expected, rtol=0, atol=0)


def test_mask_image_without_boxes():
    """Image 0 has no boxes: fg 0 and bg uniform 1/(H*W); image 1's masks are unaffected."""
    fg, bg = fgd_masks([boxes_t(), boxes_t([0, 0, 8, 8])], (3, 5), padded_hw=(24, 40))
    assert fg[0].abs().sum() == 0
    torch.testing.assert_close(bg[0], torch.full((3, 5), 1 / 15))
    assert fg[1, :2, :2].eq(1 / 4).all() and fg[1].sum().item() == pytest.approx(1.0)
    fg_all_empty, bg_all_empty = fgd_masks([boxes_t(), boxes_t()], (3, 5), padded_hw=(24, 40))
    assert fg_all_empty.abs().sum() == 0 and torch.allclose(
        bg_all_empty, torch.full((2, 3, 5), 1 / 15)
    )


def test_mask_fully_covered_image_has_zero_background():
    fg, bg = fgd_masks([boxes_t([0, 0, 32, 32])], (4, 4), padded_hw=(32, 32))
    assert (fg > 0).all() and bg.abs().sum() == 0


def test_mask_default_vs_official_mapping_on_padded_batch():
    """Padded batch 32x48, grid 4x6 (stride 8). Images 32x48 and 16x24, both with box (0, 0, 8, 8).

    Default (box / stride): x', y' in [0, 1] -> cells 0..1, value 1/4, for both images.
    Official (box / image size * grid size): image 0 is the same; image 1 gets y' = 8/16*4 = 2,
    x' = 8/24*6 = 2
    -> cells 0..2, value 1/9 (its mask is stretched toward the bottom-right).
    """
    boxes = [boxes_t([0, 0, 8, 8]), boxes_t([0, 0, 8, 8])]
    sizes = [(32, 48), (16, 24)]
    fg_default, _ = fgd_masks(boxes, (4, 6), padded_hw=(32, 48), image_sizes=sizes)
    fg_official, _ = fgd_masks(boxes, (4, 6), image_sizes=sizes, official_mapping=True)
    quarter, ninth = torch.zeros(4, 6), torch.zeros(4, 6)
    quarter[:2, :2] = 1 / 4
    ninth[:3, :3] = 1 / 9
    torch.testing.assert_close(fg_default, torch.stack([quarter, quarter]), rtol=0, atol=0)
    torch.testing.assert_close(fg_official, torch.stack([quarter, ninth]), rtol=0, atol=0)


def test_mask_argument_errors():
    with pytest.raises(ValueError, match=r"\[FGD\] padded_hw"):
        fgd_masks([boxes_t([0, 0, 8, 8])], (4, 4))
    with pytest.raises(ValueError, match=r"\[FGD\] official_mapping needs 1 image_sizes"):
        fgd_masks([boxes_t([0, 0, 8, 8])], (4, 4), official_mapping=True)


# --------------------------------------------------------------------------------------------------
# (a) hand-derived attention and losses


def test_attention_hand_made():
    """F (1, 2, 1, 2): c0 = [1, -3], c1 = [0, 2]; T = 0.5.

    mean_c |F| = [0.5, 2.5] -> A_S = 2 softmax([1, 5]);
    mean_hw |F| = [2, 1] -> A_C = 2 softmax([4, 2]).
    """
    feat = torch.tensor([[[[1.0, -3.0]], [[0.0, 2.0]]]])
    spatial, channel = fgd_attention(feat, 0.5)
    e1, e5, e4, e2 = math.exp(1), math.exp(5), math.exp(4), math.exp(2)
    torch.testing.assert_close(spatial, torch.tensor([[[2 * e1 / (e1 + e5), 2 * e5 / (e1 + e5)]]]))
    torch.testing.assert_close(channel, torch.tensor([[2 * e4 / (e4 + e2), 2 * e2 / (e4 + e2)]]))


def test_level_loss_hand_computed():
    """N=2, C=2, H=1, W=3, stride 8; F^S = [1, 2, 3] everywhere, F^T = 0 (so A^T = 1 everywhere).

    Image 0 has box (0, 0, 8, 8): x' in [0, 1] -> cells 0..1 and y' in [0, 1] -> rows 0..1 (row 1
    cut off), area 4: M_fg = [1/4, 1/4, 0], M_bg = [0, 0, 1]. Image 1 has no box: M_fg = 0,
    M_bg = 1/3. Sums over 2 channels:
    L_fg = 2 (1/4 * 1 + 1/4 * 4) / 2 = 1.25;  L_bg = 2 (9 + 14/3) / 2 = 41/3;
    L_at = sum |3 softmax([2, 4, 6]) - 1| (A_C^S = A_C^T = 1; same in both images, /N);
    L_global = 2 (14 + 14) / 2 = 28 at init.
    """
    feat_s = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 3).repeat(2, 2, 1, 1)
    feat_t = torch.zeros(2, 2, 1, 3)
    module = FGDLevelLoss(2, 2, name="p3")
    out = module(feat_s, feat_t, [boxes_t([0, 0, 8, 8]), boxes_t()], padded_hw=(8, 24))
    soft = torch.softmax(torch.tensor([2.0, 4.0, 6.0]), 0) * 3
    at = (soft - 1).abs().sum().item()
    assert out["fg"].item() == pytest.approx(1.25, rel=1e-6)
    assert out["bg"].item() == pytest.approx(41 / 3, rel=1e-6)
    assert out["at"].item() == pytest.approx(at, rel=1e-6)
    assert out["global"].item() == pytest.approx(28.0, rel=1e-6)
    total = 1e-3 * 1.25 + 5e-4 * 41 / 3 + 1e-3 * at + 5e-6 * 28
    assert out["loss"].item() == pytest.approx(total, rel=1e-6)


def test_functional_losses_hand_computed():
    """Focal with explicit weights; attention L1; global with given per-channel offsets.

    D = F^S - F^T = [[1, -1], [2, 0]] (C=2, H=1, W=2); A_C^T = [2, 0.5]; A_S^T = [1, 3];
    M_fg = [1, 0], M_bg = [0, 1].
    L_fg = A_S[0] (2*1 + 0.5*4) = 4; L_bg = A_S[1] (2*1 + 0.5*0) = 6.
    Global with add_s - add_t = [1, -1]: (D + delta)^2 = [[4, 0], [1, 1]] -> 6.
    """
    feat_s = torch.tensor([[[[1.0, -1.0]], [[2.0, 0.0]]]])
    feat_t = torch.zeros_like(feat_s)
    fg, bg = fgd_focal_loss(
        feat_s,
        feat_t,
        torch.tensor([[[1.0, 0.0]]]),
        torch.tensor([[[0.0, 1.0]]]),
        torch.tensor([[[1.0, 3.0]]]),
        torch.tensor([[2.0, 0.5]]),
    )
    assert (fg.item(), bg.item()) == pytest.approx((4.0, 6.0))
    glob = fgd_global_loss(feat_s, feat_t, torch.tensor([[1.0, -1.0]]), torch.zeros(1, 2))
    assert glob.item() == pytest.approx(6.0)
    at = fgd_attention_loss(
        torch.ones(1, 1, 2), torch.tensor([[1.5, 0.5]]), torch.ones(1, 1, 2), torch.ones(1, 2)
    )
    assert at.item() == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# (b) equality with the loop reference


def random_boxes(gen: torch.Generator, k: int, h: int, w: int) -> torch.Tensor:
    xy = torch.rand(k, 2, generator=gen) * torch.tensor([w, h])
    wh = torch.rand(k, 2, generator=gen) ** 2 * torch.tensor([w, h])
    b = torch.cat([xy, xy + wh], 1)
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    if k:  # grid-aligned and border-touching corners, and a degenerate box
        b[0] = torch.tensor([0.0, 0.0, float(w), float(h)]) * torch.rand(1, generator=gen)
        b[-1, 2:] = b[-1, :2]
    return b


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(0, 70), min_size=1, max_size=3),
    stride=st.sampled_from([4, 8, 16, 32]),
    official=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_masks_match_reference(counts, stride, official, seed):
    gen = torch.Generator().manual_seed(seed)
    padded = (96, 128)
    heights = torch.randint(40, 97, (len(counts),), generator=gen).tolist()
    widths = torch.randint(40, 129, (len(counts),), generator=gen).tolist()
    sizes = list(zip(heights, widths))
    boxes = [random_boxes(gen, k, h, w) for k, (h, w) in zip(counts, sizes)]
    hws = [(-(-padded[0] // s), -(-padded[1] // s)) for s in (stride, stride * 2, 128)]
    fast = fgd_multilevel_masks(boxes, hws, padded, sizes, official)
    for (fg, bg), hw in zip(fast, hws):
        ref_fg, ref_bg = ref.ref_masks(boxes, hw, padded, sizes, official)
        torch.testing.assert_close(fg, ref_fg, rtol=1e-6, atol=0)
        torch.testing.assert_close(bg, ref_bg, rtol=1e-6, atol=0)


def test_masks_many_boxes_use_several_bitset_words():
    gen = torch.Generator().manual_seed(3)
    boxes = [random_boxes(gen, 230, 200, 300), random_boxes(gen, 7, 150, 300)]
    for hw in [(25, 38), (50, 75)]:
        fg, bg = fgd_masks(boxes, hw, padded_hw=(200, 300))
        ref_fg, ref_bg = ref.ref_masks(boxes, hw, (200, 300))
        torch.testing.assert_close(fg, ref_fg, rtol=1e-6, atol=0)
        torch.testing.assert_close(bg, ref_bg, rtol=1e-6, atol=0)


def perturb_gc(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Give every GcBlock's zero-initialised last conv nonzero weights (a non-trivial L_global)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, GlobalContextBlock):
                last = m.channel_add[-1]
                last.weight.copy_(torch.randn(last.weight.shape, generator=gen) * 0.3)
                last.bias.copy_(torch.randn(last.bias.shape, generator=gen) * 0.3)
                m.conv_mask.bias.fill_(0.1)


@pytest.mark.parametrize("official", [False, True])
def test_loss_and_gradients_match_reference(official):
    gen = torch.Generator().manual_seed(0)
    ch_s, ch_t = {"p3": 6, "p4": 8}, {"p3": 8, "p4": 8}  # p3 needs an align conv
    loss = FGDLoss(ch_s, ch_t, official_mapping=official, **RETINANET_HPARAMS)
    perturb_gc(loss, gen)
    padded, sizes = (64, 96), [(64, 90), (40, 96)]
    boxes = [random_boxes(gen, 5, 64, 90), random_boxes(gen, 3, 40, 96)]
    hws = {"p3": (8, 12), "p4": (4, 6)}
    feats_s = {
        k: (torch.randn(2, ch_s[k], *hws[k], generator=gen) * 2).requires_grad_() for k in hws
    }
    feats_t = {k: torch.randn(2, ch_t[k], *hws[k], generator=gen) * 2 for k in hws}

    losses, parts = loss.compute(feats_s, feats_t, boxes, sizes, padded)
    torch.autograd.backward(list(losses.values()))
    grads = {n: p.grad.clone() for n, p in loss.named_parameters()}
    grads.update({k: f.grad.clone() for k, f in feats_s.items()})
    loss.zero_grad()
    for f in feats_s.values():
        f.grad = None

    for k, module in loss.levels.items():
        expected = ref.ref_level_loss(module, feats_s[k], feats_t[k], boxes, sizes, padded)
        assert_rel(losses[f"loss_fgd_{k}"], expected["loss"])
        for part in ("fg", "bg", "at", "global"):
            assert_rel(parts[f"{k}/{part}"], expected[part])
        expected["loss"].backward()
    for name, p in loss.named_parameters():
        if name.endswith(
            "conv_mask.bias"
        ):  # softmax is shift-invariant: the true gradient is 0, both are noise
            assert grads[name].abs().max() < 1e-9 and p.grad.abs().max() < 1e-9
        else:
            assert_rel(grads[name], p.grad)
    for k, f in feats_s.items():
        assert_rel(grads[k], f.grad)


@pytest.mark.parametrize("boxes_per_image", [5, 30])
def test_fpn_p3_p7_matches_reference_at_benchmark_layout(boxes_per_image):
    """The whole loss over P3-P7 (strides 8..128) of a padded two-image batch, the layout
    benchmarks/loss_cost.py times (its quick shapes), with non-trivial GcBlocks: losses, masks
    and student gradients equal the loop reference (a check the retired fgd_loss_speed
    benchmark ran before timing)."""
    from dataclasses import replace

    from d2kd.distill.probes import QUICK_SHAPES, ProbeInputs

    x = ProbeInputs.synthetic(replace(QUICK_SHAPES, boxes_per_image=boxes_per_image))
    hws = list(x.shapes.level_hw().values())
    for (fg, bg), hw in zip(fgd_multilevel_masks(x.boxes, hws, x.padded_hw), hws):
        ref_fg, ref_bg = ref.ref_masks(x.boxes, hw, x.padded_hw)
        assert_rel(fg, ref_fg)
        assert_rel(bg, ref_bg)
    channels = {k: x.shapes.channels for k in x.shapes.levels}
    fast = FGDLoss(channels, channels, **RETINANET_HPARAMS)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for m in fast.levels.values():
            for gc in (m.gc_s, m.gc_t):
                last = gc.channel_add[-1].weight
                last.copy_(torch.randn(last.shape, generator=gen) * 0.05)
    outputs, grads = [], []
    for model in (fast, ref.ReferenceFGDLoss(fast)):
        for f in x.student.values():
            f.grad = None
        out = model(x.student, x.teacher, x.boxes, x.image_sizes, x.padded_hw)
        sum(out.values()).backward()
        outputs.append(out)
        grads.append({k: f.grad.clone() for k, f in x.student.items()})
    for key in outputs[1]:
        assert_rel(outputs[0][key], outputs[1][key])
    for level in x.student:
        assert_rel(grads[0][level], grads[1][level])


def test_student_stats_gradcheck():
    """The fused backward equals autograd's, for every output, in float64."""
    gen = torch.Generator().manual_seed(1)
    kw = dict(dtype=torch.float64)
    s = torch.randn(2, 3, 5, generator=gen, **kw).requires_grad_()
    t = torch.randn(2, 3, 5, generator=gen, **kw)
    a = torch.rand(2, 3, generator=gen, **kw)
    w = torch.randn(3, generator=gen, **kw).requires_grad_()
    b = torch.randn(1, generator=gen, **kw).requires_grad_()
    assert torch.autograd.gradcheck(_StudentStats.apply, (s, t, a, w, b))
    assert torch.autograd.gradcheck(
        lambda s, w, b: _StudentStats.apply(s, t, a, w, b)[4].sum(), (s, w, b)
    )


# --------------------------------------------------------------------------------------------------
# initialisation, gradient flow, dtypes


def test_zero_init_global_loss_is_plain_mse_sum():
    gen = torch.Generator().manual_seed(2)
    module = FGDLevelLoss(16, 16, name="p4")
    feat_s, feat_t = torch.randn(3, 16, 5, 7, generator=gen), torch.randn(
        3, 16, 5, 7, generator=gen
    )
    out = module(feat_s, feat_t, [boxes_t([0, 0, 20, 20])] * 3, padded_hw=(40, 56))
    assert out["global"].item() == pytest.approx(
        ((feat_s - feat_t) ** 2).sum().item() / 3, rel=1e-6
    )
    assert module.gc_s(feat_s).abs().max() == 0 and module.gc_t(feat_t).abs().max() == 0


def test_init_of_context_blocks():
    block = GlobalContextBlock(256)
    std = block.conv_mask.weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / 256), rel=0.3)
    assert block.conv_mask.bias.abs().max() == 0
    norm = block.channel_add[1]
    assert isinstance(norm, torch.nn.LayerNorm) and tuple(norm.normalized_shape) == (128, 1, 1)
    assert norm.weight.eq(1).all() and norm.bias.eq(0).all()
    assert (
        block.channel_add[-1].weight.abs().max() == 0
        and block.channel_add[-1].bias.abs().max() == 0
    )
    assert FGDLevelLoss(8, 8).align is None and FGDLevelLoss(4, 8).align is not None


def test_gradients_reach_student_and_align_not_teacher():
    gen = torch.Generator().manual_seed(4)
    module = FGDLevelLoss(4, 8, name="p5")
    feat_s = torch.randn(2, 4, 6, 6, generator=gen, requires_grad=True)
    feat_t = torch.randn(2, 8, 6, 6, generator=gen, requires_grad=True)
    before = feat_t.detach().clone()
    out = module(feat_s, feat_t, [boxes_t([0, 0, 16, 16]), boxes_t()], padded_hw=(48, 48))
    out["loss"].backward()
    assert feat_s.grad is not None and feat_s.grad.abs().sum() > 0
    assert module.align.weight.grad is not None and module.align.weight.grad.abs().sum() > 0
    assert feat_t.grad is None and torch.equal(feat_t.detach(), before)
    # the teacher-side GcBlock is trainable through L_global (as in the official code)
    assert module.gc_t.channel_add[-1].bias.grad.abs().sum() > 0
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")


def test_fp32_math_under_bf16_autocast():
    gen = torch.Generator().manual_seed(5)
    module = FGDLevelLoss(8, 8, name="p3")
    perturb_gc(module, gen)
    feat_s = torch.randn(2, 8, 10, 12, generator=gen).bfloat16().requires_grad_()
    feat_t = torch.randn(2, 8, 10, 12, generator=gen).bfloat16()
    boxes = [boxes_t([8, 8, 40, 50]), boxes_t([0, 0, 96, 80])]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(feat_s, feat_t, boxes, padded_hw=(80, 96))
    assert all(v.dtype == torch.float32 for v in out.values())
    expected = module(feat_s.detach().float(), feat_t.float(), boxes, padded_hw=(80, 96))
    for k in out:
        assert_rel(out[k], expected[k], 1e-6)
    out["loss"].backward()
    assert feat_s.grad.dtype == torch.bfloat16


def test_hparam_presets_and_keys():
    ch = {"p3": 4, "p4": 4}
    loss = FGDLoss(ch, ch, key_prefix="loss_fgd_fpn_", **RCNN_HPARAMS)
    assert loss.levels["p3"].alpha_fgd == 5e-5 and loss.levels["p4"].lambda_fgd == 5e-7
    feats = {"p3": torch.randn(1, 4, 4, 4), "p4": torch.randn(1, 4, 2, 2)}
    losses, parts = loss.compute(
        feats, {k: v + 1 for k, v in feats.items()}, [boxes_t([0, 0, 9, 9])], None, (32, 32)
    )
    assert set(losses) == {"loss_fgd_fpn_p3", "loss_fgd_fpn_p4"}
    assert set(parts) == {f"{k}/{p}" for k in ch for p in ("fg", "bg", "at", "global")}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())


# --------------------------------------------------------------------------------------------------
# errors


def test_bad_shapes_raise_with_level_name():
    loss = FGDLoss({"p3": 4, "p4": 4}, {"p3": 8, "p4": 8})
    ok_s = {"p3": torch.randn(2, 4, 4, 4), "p4": torch.randn(2, 4, 2, 2)}
    ok_t = {"p3": torch.randn(2, 8, 4, 4), "p4": torch.randn(2, 8, 2, 2)}
    boxes = [boxes_t([0, 0, 8, 8])] * 2
    with pytest.raises(
        ValueError, match=r"\[FGD\] level 'p4': student feature expected \(N, 4, H, W\), got"
    ):
        loss({**ok_s, "p4": torch.randn(2, 5, 2, 2)}, ok_t, boxes, None, (32, 32))
    with pytest.raises(
        ValueError, match=r"\[FGD\] level 'p3': teacher feature expected \(2, 8, 4, 4\), got"
    ):
        loss(ok_s, {**ok_t, "p3": torch.randn(2, 8, 4, 5)}, boxes, None, (32, 32))
    with pytest.raises(ValueError, match=r"\[FGD\] level 'p3': expected 2 gt_boxes"):
        loss(ok_s, ok_t, boxes[:1], None, (32, 32))
    with pytest.raises(ValueError, match=r"\[FGD\] level 'p3': gt_boxes\[1\] expected \(K, 4\)"):
        loss(ok_s, ok_t, [boxes[0], torch.zeros(3, 5)], None, (32, 32))
    with pytest.raises(ValueError, match=r"\[FGD\] level 'p4' missing from teacher features"):
        loss(ok_s, {"p3": ok_t["p3"]}, boxes, None, (32, 32))
    with pytest.raises(ValueError, match=r"\[FGD\] student levels"):
        FGDLoss({"p3": 4}, {"p4": 4})
    with pytest.raises(
        ValueError, match=r"\[FGD\] GlobalContextBlock needs at least 2 channels, got 1"
    ):
        FGDLevelLoss(1, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(6)
    loss = FGDLoss({"p3": 8}, {"p3": 8})
    perturb_gc(loss, gen)
    boxes = [random_boxes(gen, 60, 64, 64), random_boxes(gen, 0, 64, 64)]
    fs, ft = torch.randn(2, 8, 8, 8, generator=gen), torch.randn(2, 8, 8, 8, generator=gen)
    cpu = loss({"p3": fs}, {"p3": ft}, boxes, None, (64, 64))
    loss.cuda()
    gpu = loss({"p3": fs.cuda()}, {"p3": ft.cuda()}, [b.cuda() for b in boxes], None, (64, 64))
    assert_rel(gpu["loss_fgd_p3"].cpu(), cpu["loss_fgd_p3"])
