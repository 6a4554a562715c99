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
