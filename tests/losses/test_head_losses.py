"""HEAD's AKD / CKD losses: element means, constant targets, empty RoI sets, shape errors."""

import pytest
import torch

from d2kd.losses.head import akd_loss, ckd_loss, roi_mse


def test_roi_mse_is_the_element_mean_with_a_constant_target():
    """s = [[1, 2], [3, 4]], t = [[1, 0], [0, 4]]: squared errors 0, 4, 9, 0 -> mean 13/4."""
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0], [0.0, 4.0]], requires_grad=True)
    loss = roi_mse(s, t)
    assert loss.item() == pytest.approx(13 / 4)
    loss.backward()
    assert torch.allclose(s.grad, 2 * (s - t).detach() / 4)
    assert t.grad is None


def test_akd_sums_layers_and_ckd_is_one_mse():
    s6, t6, s7, t7 = (torch.randn(5, 3) for _ in range(4))
    assert torch.allclose(akd_loss([s6, s7], [t6, t7]), roi_mse(s6, t6) + roi_mse(s7, t7))
    assert torch.allclose(ckd_loss(s7, t7), ((s7 - t7) ** 2).mean())


def test_empty_roi_set_gives_a_connected_zero():
    s = torch.zeros(0, 8, requires_grad=True)
    loss = roi_mse(s, torch.zeros(0, 8))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 8\).*\(4, 16\)"):
        roi_mse(torch.zeros(4, 8), torch.zeros(4, 16))
    with pytest.raises(ValueError, match="fc layers"):
        akd_loss([torch.zeros(1, 1)], [])
