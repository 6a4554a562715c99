"""IKD's attacks: the budget holds in pixel units, the teacher's loss rises, boxes follow DI."""

from types import SimpleNamespace

import pytest
import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, ImageList, Instances
from helpers import load_cfg, tiny_batch
from torch import nn

from d2kd.data.adversarial import ATTACK_METHODS, Attack, input_diversity, teacher_cls_loss

TINY_IKD = __file__.replace("data/test_adversarial_attack.py", "configs/tiny_ikd.py")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = load_cfg(TINY_IKD)
    teacher = instantiate(cfg.model.teacher.model).eval()
    teacher.requires_grad_(False)
    batch = tiny_batch(cfg)
    return teacher, batch


def _loss(model, images, batch):
    sizes = images.image_sizes
    return float(teacher_cls_loss(model, images.tensor, sizes, [x["instances"] for x in batch]))


@pytest.mark.parametrize("method", ATTACK_METHODS)
def test_budget_in_pixel_units_and_valid_range(setup, method):
    """|x_adv - x| <= eps pixels per channel, pixels stay in [0, 255], padding untouched."""
    teacher, batch = setup
    # A non-unit std so that normalised and pixel units differ.
    teacher.pixel_std.fill_(57.0)
    try:
        images = teacher.preprocess_image(batch)
        attack = Attack(method=method, eps=4, step=2, steps=3)
        adv = attack.perturb(
            teacher,
            images.tensor,
            images.image_sizes,
            [x["instances"] for x in batch],
            torch.Generator().manual_seed(0),
        )
        delta_pixels = (adv - images.tensor) * 57.0
        assert delta_pixels.abs().max() <= 4 + 1e-3
        assert delta_pixels.abs().max() > 1.0  # it did move
        pixels = adv * 57.0 + teacher.pixel_mean.view(1, -1, 1, 1)
        assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
        out = attack(teacher, batch, torch.Generator().manual_seed(0))
        for o, x in zip(out, batch):
            assert o.dtype == torch.uint8 and o.shape == x["image"].shape
            assert (o.int() - x["image"].int()).abs().max() <= 4
    finally:
        teacher.pixel_std.fill_(1.0)


def test_attack_raises_the_teachers_loss(setup):
    teacher, batch = setup
    images = teacher.preprocess_image(batch)
    clean = _loss(teacher, images, batch)
    assert "loss_normalizer" not in vars(teacher), "the loss left a normalizer behind"
    teacher.loss_normalizer = 37.5
    adv = Attack(method="difgsm", eps=8, step=2, steps=5).perturb(
        teacher,
        images.tensor,
        images.image_sizes,
        [x["instances"] for x in batch],
        torch.Generator().manual_seed(0),
    )
    assert teacher.loss_normalizer == 37.5, "the attack must not move the teacher's state"
    del teacher.loss_normalizer
    attacked = _loss(teacher, type(images)(adv, images.image_sizes), batch)
    assert attacked > clean * 1.05, (clean, attacked)


def test_attack_refuses_a_trainable_or_training_model(setup):
    teacher, batch = setup
    with pytest.raises(ValueError, match="eval mode"):
        Attack().check_model(teacher.train())
    teacher.eval()
    next(teacher.parameters()).requires_grad_(True)
    try:
        with pytest.raises(ValueError, match="requires grad"):
            Attack()(teacher, batch)
    finally:
        teacher.requires_grad_(False)
    with pytest.raises(ValueError, match="method"):
        Attack(method="cw")


@pytest.mark.parametrize("move", [True, False])
def test_input_diversity_moves_boxes_with_the_image(move):
    """A bright box stays under its (moved) GT box; the official mode leaves boxes in place."""
    x = torch.zeros(1, 3, 48, 64)
    x[..., 10:30, 20:40] = 1.0
    boxes = [torch.tensor([[20.0, 10.0, 40.0, 30.0]])]
    for seed in range(5):
        out, moved, _ = input_diversity(x, boxes, 0.7, torch.Generator().manual_seed(seed), move)
        assert out.shape == (1, 3, 64, 64)
        b = moved[0][0]
        if not move:
            assert torch.equal(b, boxes[0][0])
            continue
        x0, y0, x1, y1 = b.round().int().tolist()
        inside = out[0, 0, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1]
        assert inside.min() > 0.9  # the box interior is the bright patch
        assert out[0, 0].sum() == pytest.approx(inside.numel() + (out[0, 0].sum() - inside.sum()))
        # the bright mass sits within one pixel of the moved box
        ys, xs = torch.nonzero(out[0, 0] > 0.5, as_tuple=True)
        assert xs.min() >= x0 - 1 and xs.max() <= x1 and ys.min() >= y0 - 1 and ys.max() <= y1


def test_attack_on_a_two_stage_teacher(setup):
    """GeneralizedRCNN: RPN + RoI classification losses in eval mode, BN untouched."""
    _, batch = setup
    cfg = load_cfg(TINY_IKD.replace("tiny_ikd.py", "tiny_ikd_frcnn.py"))
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    model.requires_grad_(False)
    attack = Attack(method="mifgsm", eps=8, step=4, steps=2, loss_keys=("loss_rpn_cls", "loss_cls"))
    out = attack(model, batch)
    assert not model.training and not model.roi_heads.training
    assert all((o.int() - x["image"].int()).abs().max() <= 8 for o, x in zip(out, batch))


def test_loss_normalizer_is_restored_exactly(setup):
    """Absent before (a fresh RetinaNet): absent after, even when the loss raises; else kept."""
    teacher, batch = setup
    images = teacher.preprocess_image(batch)
    gts = [x["instances"] for x in batch]
    assert "loss_normalizer" not in vars(teacher)
    teacher_cls_loss(teacher, images.tensor, images.image_sizes, gts)
    assert "loss_normalizer" not in vars(teacher)
    with pytest.raises(KeyError, match="loss_nope"):
        teacher_cls_loss(teacher, images.tensor, images.image_sizes, gts, ("loss_nope",))
    assert "loss_normalizer" not in vars(teacher)
    teacher.loss_normalizer = 12.25
    try:
        teacher_cls_loss(teacher, images.tensor, images.image_sizes, gts)
        assert teacher.loss_normalizer == 12.25
    finally:
        del teacher.loss_normalizer


class _PixelModel(nn.Module):
    """Just what the budget needs: pixel mean/std and Detectron2's padding rule (divisor 16)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor([103.5, 116.3, 123.7]).view(3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor([57.4, 57.1, 58.4]).view(3, 1, 1))
        self.backbone = SimpleNamespace(size_divisibility=16, padding_constraints={})


def _fake_grad(x: torch.Tensor) -> torch.Tensor:
    """d loss / d x, elementwise and non-zero at the padding value 0 (so the norm region shows)."""
    return torch.sin(5 * x + 1)


def _official_per_image(image, eps, step, steps, decay, divisor):
    """One image, as the official difgsm.py attacks it alone (no input diversity), in loops.

    ``image`` is (C, h, w) normalised. The official pads the normalised image with zeros (mmdet's
    Pad after Normalize), takes lb_c / ub_c over the padded image, eps = eps/255 * max_c(ub -
    lb), then per step: g = d(-L)/dx, g = g / |g|_1 + decay * m, x = x - a * sign(g), delta
    clipped to [-eps, eps], each channel clipped to [lb_c, ub_c]. As in d2kd, the padding itself
    is held at 0 (d2kd never perturbs it; the official does, and crops it away afterwards).
    """
    c, h, w = image.shape
    ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    padded = torch.zeros(c, ph, pw, dtype=image.dtype)
    padded[:, :h, :w] = image
    lb = [float(padded[k].min()) for k in range(c)]
    ub = [float(padded[k].max()) for k in range(c)]
    span = max(ub[k] - lb[k] for k in range(c))
    eps, alpha = eps / 255 * span, step / 255 * span
    adv, momentum = padded.clone(), torch.zeros_like(padded)
    for _ in range(steps):
        grad = -_fake_grad(adv)  # the official differentiates -L
        grad = grad / grad.abs().sum() + decay * momentum
        momentum = grad
        moved = adv - alpha * grad.sign()
        adv = adv.clone()
        adv[:, :h, :w] = moved[:, :h, :w]
        delta = torch.clamp(adv - padded, min=-eps, max=eps)
        for k in range(c):
            adv[k] = torch.clamp(padded[k] + delta[k], min=lb[k], max=ub[k])
    return adv[:, :h, :w]


@pytest.mark.parametrize("method", ["mifgsm", "difgsm"])
def test_official_budget_is_per_image_at_batch_2(monkeypatch, method):
    """Two images of different sizes and pixel ranges, batched: each is attacked with its own
    range and norm, as the official attacks it alone (a batch-wide range gives image 1 image 0's
    budget, and the batch's padding would enter image 1's range and norm)."""
    model = _PixelModel().eval()
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 40, 56, generator=gen) * 255  # full range; own padding 48 x 64
    a[1] = 200 + 40 * torch.rand(40, 56, generator=gen)  # bright: 0 enters only via padding
    b = 100 + 30 * torch.rand(3, 64, 48, generator=gen)  # narrow range; no own padding
    b[0] = 200 + 40 * torch.rand(64, 48, generator=gen)
    norm = [(im - model.pixel_mean) / model.pixel_std for im in (a, b)]
    images = ImageList.from_tensors(norm, size_divisibility=16)
    assert images.tensor.shape[-2:] == (64, 64)
    monkeypatch.setattr(Attack, "_gradient", lambda self, m, x, *args: _fake_grad(x))
    attack = Attack(method=method, eps=8, step=2, steps=4, official_budget=True)
    attack.diversity_prob = 0.0
    gts = [Instances(size, gt_boxes=Boxes(torch.zeros(0, 4))) for size in images.image_sizes]
    adv = attack.perturb(model, images.tensor, images.image_sizes, gts)
    for i, image in enumerate(norm):
        h, w = image.shape[-2:]
        want = _official_per_image(image, 8, 2, 4, 1.0, divisor=16)
        torch.testing.assert_close(adv[i, :, :h, :w], want, atol=1e-5, rtol=0)
    assert (adv[1, :, :, 48:] == 0).all() and (adv[0, :, 40:] == 0).all(), "padding moved"
    # The two budgets differ: the test would not notice a batch-wide range otherwise.
    spans = [float((im.amax(dim=(1, 2)) - im.amin(dim=(1, 2))).max()) for im in norm]
    assert abs(spans[0] - spans[1]) > 1.0, spans
