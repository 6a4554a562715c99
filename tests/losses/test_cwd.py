"""CWD: the pure loss (hand-derived values, a loop reference from the paper's equations,
gradients, dtypes, errors) and the KD term (keys, adapters, a training step of a tiny Distiller,
its cost probe)."""

import math

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.utils.events import EventStorage
from helpers import TINY_DISTILL, load_cfg, tiny_batch

from d2kd.distill.probes import QUICK_SHAPES, ProbeInputs
from d2kd.distill.terms.cwd import CWDTerm
from d2kd.losses.cwd import cwd_loss


def cwd_reference(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> float:
    """The paper's Eq. 3 and 4, one channel and one location at a time, in float64 Python math.

    phi(y)_{c,i} = exp(y_{c,i} / tau) / sum_j exp(y_{c,j} / tau) over the H*W locations, then
    tau^2 / C * sum_c sum_i phi(y^T)_{c,i} log(phi(y^T)_{c,i} / phi(y^S)_{c,i}), averaged over the
    N images as the official code.
    """
    n_images, channels, h, w = student.shape
    total = 0.0
    for n in range(n_images):
        for c in range(channels):
            ys = [student[n, c, i, j].item() / tau for i in range(h) for j in range(w)]
            yt = [teacher[n, c, i, j].item() / tau for i in range(h) for j in range(w)]
            zs = sum(math.exp(v) for v in ys)
            zt = sum(math.exp(v) for v in yt)
            for a, b in zip(yt, ys):
                p_t, p_s = math.exp(a) / zt, math.exp(b) / zs
                total += p_t * math.log(p_t / p_s)
    return tau**2 * total / (n_images * channels)


def pair(seed: int, shape=(2, 3, 4, 5), scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale, torch.randn(*shape, generator=g) * scale


# ------------------------------------------------------------------------------ (a) hand-derived
@pytest.mark.parametrize("tau", [0.5, 1.0, 4.0])
def test_identical_maps_give_zero(tau):
    """p_s = p_t in every channel, so every KL term is p log 1 = 0."""
    s, _ = pair(0)
    assert cwd_loss(s, s.clone(), tau).item() == pytest.approx(0.0, abs=1e-6)


def test_a_constant_per_channel_changes_nothing():
    """softmax(y + k) = softmax(y): adding a constant to a channel of either map leaves its
    distribution, hence the loss, unchanged."""
    s, t = pair(1)
    shift = torch.arange(3.0).view(1, 3, 1, 1) * 5 - 4
    torch.testing.assert_close(cwd_loss(s + shift, t - shift), cwd_loss(s, t))


def test_one_channel_2x2_by_hand():
    """Teacher all zeros: p_t = (1/4, 1/4, 1/4, 1/4). Student (ln 3, 0, 0, 0): exp = (3, 1, 1, 1),
    p_s = (1/2, 1/6, 1/6, 1/6).

    KL(p_t || p_s) = 1/4 [log((1/4) / (1/2)) + 3 log((1/4) / (1/6))] = (3 log 1.5 - log 2) / 4
    = 0.1308120..., and N = C = 1, tau = 1.
    """
    s = torch.tensor([[[[math.log(3.0), 0.0], [0.0, 0.0]]]])
    expected = (3 * math.log(1.5) - math.log(2.0)) / 4
    assert cwd_loss(s, torch.zeros_like(s)).item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.1308120, rel=1e-6)


def test_temperature_by_hand():
    """The same maps at tau = 2: y / tau = (ln 3 / 2, 0, 0, 0), exp = (sqrt 3, 1, 1, 1), so
    p_s = (sqrt 3, 1, 1, 1) / (3 + sqrt 3), and p_t stays uniform.

    tau^2 KL = 4 * 1/4 [log((3 + sqrt 3) / (4 sqrt 3)) + 3 log((3 + sqrt 3) / 4)].
    """
    s = torch.tensor([[[[math.log(3.0), 0.0], [0.0, 0.0]]]])
    r3 = math.sqrt(3.0)
    expected = math.log((3 + r3) / (4 * r3)) + 3 * math.log((3 + r3) / 4)
    assert cwd_loss(s, torch.zeros_like(s), tau=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_mean_over_images_and_channels():
    """N = 2 images of C = 2 channels where only (image 1, channel 0) differs: the hand-derived
    0.1308 of the 2x2 case divided by N * C = 4."""
    s = torch.zeros(2, 2, 2, 2)
    s[1, 0, 0, 0] = math.log(3.0)
    expected = (3 * math.log(1.5) - math.log(2.0)) / 4 / 4
    assert cwd_loss(s, torch.zeros_like(s)).item() == pytest.approx(expected, rel=1e-5)


def test_gradient_by_hand_and_only_to_the_student():
    """d/dy_s [tau^2 KL(p_t || softmax(y_s / tau))] = tau (p_s - p_t), divided by N * C; the
    teacher map gets no gradient (it is a constant)."""
    s, t = pair(2)
    s.requires_grad_(True)
    t.requires_grad_(True)
    tau = 2.0
    cwd_loss(s, t, tau).backward()
    assert t.grad is None
    p_s = torch.softmax(s.detach().flatten(2) / tau, dim=2)
    p_t = torch.softmax(t.detach().flatten(2) / tau, dim=2)
    expected = (tau * (p_s - p_t) / (2 * 3)).view_as(s)
    torch.testing.assert_close(s.grad, expected, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- (b) loop reference
@pytest.mark.parametrize("tau", [0.5, 1.0, 4.0])
@pytest.mark.parametrize("seed", [3, 4])
def test_matches_the_loop_reference(seed, tau):
    s, t = pair(seed)
    assert cwd_loss(s, t, tau).item() == pytest.approx(cwd_reference(s, t, tau), rel=1e-5)


def test_matches_the_loop_reference_on_fpn_like_maps():
    """Uneven spatial sizes (7 x 3) and more channels, as an FPN level of a padded batch."""
    s, t = pair(5, shape=(2, 8, 7, 3), scale=2.0)
    assert cwd_loss(s, t).item() == pytest.approx(cwd_reference(s, t, 1.0), rel=1e-5)


# ------------------------------------------------------------------------------- dtypes, errors
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_computed_in_fp32(dtype):
    s, t = pair(6)
    s, t = s.to(dtype), t.to(dtype)
    loss = cwd_loss(s, t)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, cwd_loss(s.float(), t.float()))


@pytest.mark.parametrize(
    "shapes",
    [((2, 3, 4, 5), (2, 3, 4, 6)), ((2, 3, 4, 5), (2, 4, 4, 5)), ((3, 4, 5), (3, 4, 5))],
)
def test_shape_errors_name_the_shapes(shapes):
    s, t = (torch.zeros(*shape) for shape in shapes)
    with pytest.raises(ValueError, match=r"\[cwd_loss\] expected .* got student \(.*teacher"):
        cwd_loss(s, t)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan")])
def test_tau_must_be_positive(tau):
    s, t = pair(7)
    with pytest.raises(ValueError, match="tau must be > 0"):
        cwd_loss(s, t, tau)
    with pytest.raises(ValueError, match=r"\[CWD\] tau must be > 0"):
        CWDTerm(tau=tau)


# --------------------------------------------------------------------------------------- the term
@pytest.fixture(scope="module")
def cfg():
    """tests/configs/tiny_distill.py (a 32-ch FPN student under a 64-ch teacher) with CWD on
    P3-P5 instead of feature MSE, at the official weight."""
    cfg = load_cfg(TINY_DISTILL)
    cfg.model.terms = {"cwd": L(CWDTerm)(levels=["p3", "p4", "p5"])}
    cfg.model.weights = {"cwd": 5.0}
    return cfg


def test_term_keys_and_adapters(cfg):
    model = instantiate(cfg.model)
    term = model.terms["cwd"]
    assert term.loss_keys() == ["loss_cwd_p3", "loss_cwd_p4", "loss_cwd_p5"]
    for level in ("p3", "p4", "p5"):
        adapter = term.adapters[level]
        assert isinstance(adapter, torch.nn.Conv2d), "32-ch student maps need a 1x1 conv"
        assert (adapter.in_channels, adapter.out_channels, adapter.kernel_size) == (32, 64, (1, 1))
    # Equal channels: no adapter, nothing to train.
    same = CWDTerm(levels=["p3"])
    same.setup(model.teacher_model, model.teacher_model)
    assert isinstance(same.adapters["p3"], torch.nn.Identity)


def test_tiny_distiller_trains_a_step(cfg):
    """One SGD step of the tiny Distiller: the declared keys are returned, finite and positive;
    the adapters and the student's FPN move, the teacher does not."""
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    optimizer = instantiate(dict(cfg.optimizer, params=dict(cfg.optimizer.params, model=model)))
    term = model.terms["cwd"]
    adapter_before = term.adapters["p3"].weight.detach().clone()
    fpn_before = model.student.backbone.fpn_output3.weight.detach().clone()
    teacher_before = {k: v.clone() for k, v in model.teacher_model.state_dict().items()}
    batch = tiny_batch(cfg)
    with EventStorage(0):
        losses = model(batch)
        kd = {k: v for k, v in losses.items() if k.startswith("loss_cwd")}
        assert sorted(kd) == term.loss_keys()
        assert {"loss_cls", "loss_box_reg"} <= set(losses)
        assert all(v.ndim == 0 and torch.isfinite(v) and v > 0 for v in kd.values())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        assert term.adapters["p3"].weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in model.teacher_model.parameters())
        optimizer.step()
    assert not torch.equal(term.adapters["p3"].weight.detach(), adapter_before)
    assert not torch.equal(model.student.backbone.fpn_output3.weight.detach(), fpn_before)
    for k, v in model.teacher_model.state_dict().items():
        assert torch.equal(v, teacher_before[k]), f"teacher {k} changed"


def test_distiller_applies_the_weight_once(cfg):
    """The term returns unweighted losses; the Distiller multiplies them by the recipe's 5.0."""
    batch = tiny_batch(cfg)
    out = {}
    for weight in (1.0, 5.0):
        torch.manual_seed(0)  # the same initial weights for both models
        model = instantiate(dict(cfg.model, weights={"cwd": weight})).train()
        with EventStorage(0), torch.no_grad():
            out[weight] = model(batch)
    for key in ("loss_cwd_p3", "loss_cwd_p4", "loss_cwd_p5"):
        torch.testing.assert_close(out[5.0][key], 5 * out[1.0][key])
    torch.testing.assert_close(out[5.0]["loss_cls"], out[1.0]["loss_cls"])


def test_cost_probe():
    """benchmarks/loss_cost.py times ``cwd``: the pure loss over every level of the shared
    inputs; a call returns a finite scalar and never accumulates gradients."""
    inputs = ProbeInputs.synthetic(QUICK_SHAPES)
    probes = CWDTerm.cost_probes(inputs)
    assert list(probes) == ["cwd"]
    first = probes["cwd"]()
    first.backward()
    grad = inputs.student["p3"].grad.clone()
    second = probes["cwd"]()
    second.backward()
    assert first.ndim == 0 and torch.isfinite(first) and torch.equal(first, second)
    torch.testing.assert_close(inputs.student["p3"].grad, grad)  # cleared before each call
