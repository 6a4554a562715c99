"""IKD's attacks: the budget holds in pixel units, the teacher's loss rises, boxes follow DI."""

import pytest
import torch
from detectron2.config import instantiate
from helpers import load_cfg, tiny_batch

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
    normalizer = teacher.loss_normalizer
    adv = Attack(method="difgsm", eps=8, step=2, steps=5).perturb(
        teacher,
        images.tensor,
        images.image_sizes,
        [x["instances"] for x in batch],
        torch.Generator().manual_seed(0),
    )
    assert teacher.loss_normalizer == normalizer, "the attack must not move the teacher's state"
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
