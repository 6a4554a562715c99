"""DFAD's discrepancy and generator objective, by hand."""

import math

import pytest
import torch

from d2kd.losses import dfad_discrepancy, generator_loss, mean_l1


def test_mean_l1_by_hand():
    s = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    t = torch.tensor([[0.0, 0.0], [0.5, 4.0]])
    # |1| + |-2| + 0 + |-4| = 7 over 4 elements
    assert float(mean_l1(s, t)) == pytest.approx(7 / 4)


def test_parts_are_averaged_separately():
    s = {"cls": torch.ones(2, 10, 3), "box": torch.zeros(2, 10, 4)}
    t = {"cls": torch.zeros(2, 10, 3), "box": torch.full((2, 10, 4), 2.0)}
    out = dfad_discrepancy(s, t)
    assert set(out) == {"loss_dfad_cls", "loss_dfad_box"}
    assert float(out["loss_dfad_cls"]) == 1.0 and float(out["loss_dfad_box"]) == 2.0


def test_shape_and_part_mismatches_are_named():
    with pytest.raises(ValueError, match=r"part 'box'.*\(2, 4\).*\(2, 5\)"):
        dfad_discrepancy({"box": torch.zeros(2, 4)}, {"box": torch.zeros(2, 5)})
    with pytest.raises(KeyError, match="cls"):
        dfad_discrepancy({"cls": torch.zeros(1)}, {"box": torch.zeros(1)})


def test_generator_loss_forms_and_gradient():
    d = torch.tensor(3.0, requires_grad=True)
    loss = generator_loss(d, "log")
    assert float(loss.detach()) == pytest.approx(-math.log(4.0))
    loss.backward()
    assert float(d.grad) == pytest.approx(-1 / 4)  # d/dd -log(1 + d): bounded as d grows
    assert float(generator_loss(torch.tensor(3.0), "neg")) == -3.0
    with pytest.raises(ValueError, match="'l2'"):
        generator_loss(d, "l2")


def test_gradient_reaches_both_inputs_with_opposite_signs():
    s = torch.tensor([2.0, -1.0], requires_grad=True)
    t = torch.tensor([1.0, 1.0], requires_grad=True)
    mean_l1(s, t).backward()
    assert s.grad.tolist() == [0.5, -0.5] and t.grad.tolist() == [-0.5, 0.5]


# ---- the foreground-aware form and the BN prior (issue: DFAD that learns on detectors) -------
from d2kd.losses.discrepancy import (  # noqa: E402
    bn_statistics_loss,
    foreground_weights,
    masked_box_discrepancy,
    weighted_cls_discrepancy,
)


def test_foreground_weights_floor_and_detach():
    scores = torch.tensor([[0.9, 0.01, 0.3]], requires_grad=True)
    w = foreground_weights(scores, floor=0.05)
    assert w[0].tolist() == pytest.approx([0.9, 0.05, 0.3]) and not w.requires_grad
    with pytest.raises(ValueError, match="floor"):
        foreground_weights(scores, 1.5)


def test_weighted_l1_by_hand():
    """Two anchors, K = 2. Anchor 0: |1-0| and |-1-1| -> mean 1.5, weight 0.9; anchor 1:
    |0-0| and |2-0| -> mean 1.0, weight 0.1. (0.9 * 1.5 + 0.1 * 1.0) / (0.9 + 0.1) = 1.45."""
    s = torch.tensor([[[1.0, -1.0], [0.0, 2.0]]])
    t = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    w = torch.tensor([[0.9, 0.1]])
    assert float(weighted_cls_discrepancy(s, t, w, "l1")) == pytest.approx(1.45)


def test_uniform_weights_reduce_to_the_official_mean_l1():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 50, 18, generator=g), torch.randn(2, 50, 18, generator=g)
    got = weighted_cls_discrepancy(s, t, torch.ones(2, 50), "l1")
    torch.testing.assert_close(got, mean_l1(s, t))


def test_bce_is_the_bernoulli_kl_by_hand_and_zero_at_agreement():
    """One anchor, one class: teacher logit 0 (p = 0.5), student logit log(3) (q = 0.75).
    KL(Bern(0.5) || Bern(0.75)) = 0.5 log(0.5/0.75) + 0.5 log(0.5/0.25) = 0.5 log(4/3)."""
    s, t, w = torch.tensor([[[math.log(3.0)]]]), torch.zeros(1, 1, 1), torch.ones(1, 1)
    assert float(weighted_cls_discrepancy(s, t, w, "bce")) == pytest.approx(0.5 * math.log(4 / 3))
    assert float(weighted_cls_discrepancy(t, t, w, "bce")) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="distance"):
        weighted_cls_discrepancy(s, t, w, "l2")


def test_masked_box_by_hand_and_empty_mask():
    s = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [9.0, 9.0, 9.0, 9.0]]], requires_grad=True)
    t = torch.zeros(1, 2, 4)
    mask = torch.tensor([[True, False]])
    assert float(masked_box_discrepancy(s, t, mask)) == 1.0  # the background anchor ignored
    empty = masked_box_discrepancy(s, t, torch.zeros(1, 2, dtype=torch.bool))
    assert float(empty) == 0.0
    empty.backward()
    assert s.grad is not None and float(s.grad.abs().sum()) == 0.0


def test_bn_statistics_loss_by_hand():
    """Layer 0: means (1, 0) vs (0, 0), vars (1, 1) vs (1, 4) -> 1 + 3; layer 1: 0 + 0."""
    bm, bv = [torch.tensor([1.0, 0.0]), torch.zeros(3)], [torch.tensor([1.0, 1.0]), torch.ones(3)]
    rm, rv = [torch.zeros(2), torch.zeros(3)], [torch.tensor([1.0, 4.0]), torch.ones(3)]
    assert float(bn_statistics_loss(bm, bv, rm, rv)) == pytest.approx(4.0)
    assert float(bn_statistics_loss([], [], [], [])) == 0.0
    with pytest.raises(ValueError, match="layer 0"):
        bn_statistics_loss([torch.zeros(2)], [torch.zeros(3)], [torch.zeros(2)], [torch.zeros(2)])
