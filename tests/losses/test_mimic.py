"""LSHFM's L2 / LSH / LSHL2 losses against hand computations, and the projection's determinism."""

import math
import os
import subprocess
import sys

import pytest
import torch

from d2kd.losses.mimic import LSHProjection, MimicLoss, l2_rows, lsh_rows, reduce_rows


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_lsh_rows_hand_computed():
    """f_s = (1, 0), f_t = (-1, 2), W = [[1, 0], [0, 1], [1, 1]], b = 0.

    h_s = (1, 0, 1), h_t = (-1, 2, 1) so y = (0, 1, 1); BCE(x, y) = softplus(x) - x y gives
    log(1+e), log 2, log(1+e) - 1, whose mean is (2 log(1+e) + log 2 - 1) / 3.
    """
    f_s, f_t = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 2.0]])
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    expected = (2 * math.log(1 + math.e) + math.log(2) - 1) / 3
    assert lsh_rows(f_s, f_t, weight).item() == pytest.approx(expected, rel=1e-6)
    # a bias shifts both sides' logits: b = (2, -3, 0) gives h_s = (3, -3, 1), y = (1, 0, 1)
    bias = torch.tensor([2.0, -3.0, 0.0])
    expected = (_softplus(3) - 3 + _softplus(-3) + _softplus(1) - 1) / 3
    assert lsh_rows(f_s, f_t, weight, bias).item() == pytest.approx(expected, rel=1e-6)


def test_l2_and_modes_with_beta():
    """L2 of (1, 0) vs (-1, 2) is mean(4, 4) = 4; lshl2 = beta (L2 + LSH), split in two keys."""
    f_s, f_t = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 2.0]])
    assert l2_rows(f_s, f_t).item() == 4.0
    loss = MimicLoss(2, mode="lshl2", beta=7.0, hash_num=3)
    loss.projection.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    out = loss(f_s, f_t)
    lsh = (2 * math.log(1 + math.e) + math.log(2) - 1) / 3
    assert out["l2"].item() == pytest.approx(28.0)
    assert out["lsh"].item() == pytest.approx(7 * lsh, rel=1e-6)
    assert set(MimicLoss(2, mode="l2")(f_s, f_t)) == {"l2"}
    assert set(MimicLoss(2, mode="lsh")(f_s, f_t)) == {"lsh"}
    with pytest.raises(ValueError, match="mode"):
        MimicLoss(2, mode="l1")


def test_reduce_rows_per_image():
    """Rows (1, 3 | - | 5) of images (0, 0, 2): per-image means 2 and 5, averaged over the two
    images that have rows: 3.5 (a global mean would give 3)."""
    rows = torch.tensor([1.0, 3.0, 5.0])
    ids = torch.tensor([0, 0, 2])
    assert reduce_rows(rows, ids, 3).item() == pytest.approx(3.5)
    assert reduce_rows(rows).item() == pytest.approx(3.0)


def test_empty_rows_give_attached_zero():
    f_s = torch.zeros(0, 8, requires_grad=True)
    out = MimicLoss(8, mode="lshl2", hash_num=16)(f_s, torch.zeros(0, 8), torch.zeros(0).long(), 2)
    total = sum(out.values())
    assert torch.isfinite(total) and total.item() == 0.0 and total.requires_grad
    total.backward()
    assert f_s.grad is not None and f_s.grad.shape == (0, 8)


def test_fp32_under_low_precision_and_teacher_detached():
    f_s = torch.randn(5, 16, dtype=torch.bfloat16, requires_grad=True)
    f_t = torch.randn(5, 16, requires_grad=True)
    out = MimicLoss(16, hash_num=32)(f_s, f_t)
    assert all(v.dtype == torch.float32 for v in out.values())
    sum(out.values()).backward()
    assert f_s.grad is not None and f_t.grad is None


def test_gradient_matches_autograd_reference():
    """The LSH gradient is beta/(M K) W^T (sigmoid(h_s) - y), straight from the BCE."""
    torch.manual_seed(0)
    f_s, f_t = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6)
    loss = MimicLoss(6, mode="lsh", beta=2.0, hash_num=10)
    loss(f_s, f_t)["lsh"].backward()
    w = loss.projection.weight
    y = (f_t @ w.T > 0).float()
    expected = 2.0 / (4 * 10) * (torch.sigmoid(f_s.detach() @ w.T) - y) @ w
    torch.testing.assert_close(f_s.grad, expected)


def test_projection_std_seed_and_state_dict_round_trip():
    proj = LSHProjection(dim=12, hash_num=40, std=0.5, seed=3)
    again = LSHProjection(dim=12, hash_num=40, std=0.5, seed=3)
    assert torch.equal(proj.weight, again.weight)
    proj.set_std(0.5)  # idempotent: redrawn from the seed, not rescaled
    assert torch.equal(proj.weight, again.weight)
    proj.set_std(2.0)
    torch.testing.assert_close(proj.weight, again.weight * 4)
    assert not torch.equal(LSHProjection(12, 40, seed=4).weight, LSHProjection(12, 40).weight)
    fresh = LSHProjection(dim=12, hash_num=40, seed=99)
    fresh.load_state_dict(proj.state_dict())
    assert torch.equal(fresh.weight, proj.weight) and fresh.std.item() == 2.0
    assert {"weight", "bias", "std"} <= set(proj.state_dict())
    assert not any(p.requires_grad for p in [proj.weight, proj.bias])
    assert list(proj.parameters()) == []  # buffers: never optimised


_CHILD = (
    "import sys, torch; torch.manual_seed(int(sys.argv[2]));"
    "from d2kd.losses.mimic import MimicLoss;"
    "torch.save(MimicLoss(64, hash_num=256, std=0.01, seed=7).projection.weight, sys.argv[1])"
)


def test_projection_identical_across_processes(tmp_path):
    """Two processes (different global RNG states, like DDP ranks) draw the same projection."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    paths = [str(tmp_path / f"rank{i}.pt") for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, p, str(i)], env=env)
        for i, p in enumerate(paths)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    w0, w1 = (torch.load(p, weights_only=True) for p in paths)
    assert torch.equal(w0, w1)
    assert torch.equal(w0, MimicLoss(64, hash_num=256, std=0.01, seed=7).projection.weight)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(3, 5\)"):
        l2_rows(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"expected \(M, 8\)"):
        MimicLoss(8)(torch.zeros(2, 4), torch.zeros(2, 4))
