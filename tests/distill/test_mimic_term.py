"""LSHFM wired as KD terms on tiny RetinaNets and Faster R-CNNs: keys, gradients, masks, state."""

import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import instantiate
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from helpers import ROOT, load_cfg, tiny_batch

from d2kd.distill import KDContext, check_finite
from d2kd.distill.terms.mimic import patches_at

TINY_RETINA = os.path.join(ROOT, "tests", "configs", "tiny_lshfm_retinanet.py")
TINY_RCNN = os.path.join(ROOT, "tests", "configs", "tiny_lshfm_rcnn.py")


@pytest.fixture(scope="module")
def retina_cfg():
    return load_cfg(TINY_RETINA)


@pytest.fixture(scope="module")
def rcnn_cfg():
    return load_cfg(TINY_RCNN)


@pytest.fixture(scope="module")
def retina_batch(retina_cfg):
    return tiny_batch(retina_cfg)


def _step(model, batch):
    with EventStorage(0):
        losses = model(batch)
    sum(losses.values()).backward()
    return losses


def test_patches_at_equals_unfold():
    feat = torch.randn(2, 3, 5, 4)
    n, loc = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 7, 19, 13])
    expected = F.unfold(feat, 3, padding=1).transpose(1, 2)[n, loc]  # (M, 27)
    torch.testing.assert_close(patches_at(feat, n, loc // 4, loc % 4), expected)


def test_retinanet_step_keys_gradients_and_frozen_teacher(retina_cfg, retina_batch):
    model = instantiate(retina_cfg.model).train()
    losses = _step(model, retina_batch)
    assert {"loss_lshfm_l2", "loss_lshfm_lsh", "loss_cls"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_lshfm_l2"] > 0, "the batch has foreground locations"
    term = model.terms["lshfm"]
    assert term.loss.dim == 9 * 64, "patches of the 64-ch teacher tower"
    assert term.adapter.weight.grad is not None, "32-ch student tower adapted to 64"
    assert model.student.head.cls_subnet[0].weight.grad is not None
    assert all(p.grad is None for p in model.teacher.parameters())


def test_retinanet_masks(retina_cfg, retina_batch):
    model = instantiate(retina_cfg.model).train()
    term = model.terms["lshfm"]
    maps = [torch.zeros(2, 1, h, h) for h in (8, 4, 2, 1, 1)]  # 64 px: P3-P7
    ctx = KDContext(retina_batch[:1] * 2, model.student, model.teacher_model, {}, {}, 0)
    ctx.gt_instances[1] = ctx.gt_instances[1][:0]  # the second image has no objects
    rules = {}
    for rule in ("fg", "official", "all"):
        term.mask = rule
        rules[rule] = torch.cat(term.location_masks(ctx, maps), dim=1)
    assert rules["all"].all()
    assert rules["fg"][0].any() and not rules["fg"][1].any()
    assert rules["official"][1].all(), "no objects: every anchor is background, none ignored"
    assert (rules["fg"] <= rules["official"]).all()


def test_projection_scale_from_loaded_teacher_and_saved(retina_cfg):
    model = instantiate(retina_cfg.model)
    term = model.terms["lshfm"]
    proj = term.loss.projection
    cls_w = model.teacher_model.head.cls_score.weight
    assert proj.std.item() == pytest.approx(cls_w.std().item())
    with torch.no_grad():
        cls_w.mul_(3.0)  # "loading" the teacher's trained weights
    model.on_teacher_loaded()
    assert proj.std.item() == pytest.approx(cls_w.std().item())
    state = model.terms.state_dict()  # what the checkpointer saves under "distill"
    assert torch.equal(state["lshfm.loss.projection.weight"], proj.weight)
    other = instantiate(retina_cfg.model)
    other.terms.load_state_dict(state)
    assert torch.equal(other.terms["lshfm"].loss.projection.weight, proj.weight)


def test_rcnn_step_keys_gradients_and_frozen_teacher(rcnn_cfg):
    model = instantiate(rcnn_cfg.model).train()
    batch = tiny_batch(rcnn_cfg)
    losses = _step(model, batch)
    assert {"loss_lshfm_l2", "loss_lshfm_lsh", "loss_cls", "loss_rpn_cls"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.student.roi_heads.box_head.fc2.weight.grad is not None
    assert all(p.grad is None for p in model.teacher.parameters())
    std = model.teacher_model.roi_heads.box_predictor.cls_score.weight.std().item()
    assert model.terms["lshfm"].loss.projection.std.item() == pytest.approx(std)


def test_rcnn_teacher_rows_on_the_student_boxes(rcnn_cfg):
    """The teacher's rows are its own box head on exactly the student's sampled RoIs."""
    model = instantiate(rcnn_cfg.model).train()
    batch = tiny_batch(rcnn_cfg)
    term = model.terms["lshfm"]
    captured = {}
    orig = term.features

    def spy(ctx):
        captured["out"] = orig(ctx)
        captured["boxes"] = ctx.student_inputs["roi_heads.box_pooler"][1]
        captured["t_feats"] = ctx.teacher_features()
        return captured["out"]

    term.features = spy
    with EventStorage(0):
        model(batch)
    f_s, f_t, _ = captured["out"]
    boxes = captured["boxes"]
    assert f_s.shape == f_t.shape == (sum(len(b) for b in boxes), 64)
    heads = model.teacher_model.roi_heads
    feats = [captured["t_feats"][k] for k in heads.box_in_features]
    with torch.no_grad():
        expected = heads.box_head(heads.box_pooler(feats, boxes))
    torch.testing.assert_close(f_t, expected)


def test_rcnn_zero_rois_give_finite_zero(rcnn_cfg):
    model = instantiate(rcnn_cfg.model).train()
    student = model.student
    images = torch.randn(2, 3, 64, 64)
    s_feats = student.backbone(images)
    feats = [s_feats[k] for k in student.roi_heads.box_in_features]
    empty = [Boxes(torch.zeros(0, 4)) for _ in range(2)]
    fc7 = student.roi_heads.box_head(student.roi_heads.box_pooler(feats, empty))
    ctx = KDContext(
        [{"image": images[0]}, {"image": images[1]}],
        student,
        model.teacher_model,
        {"roi_heads.box_head": fc7},
        {"roi_heads.box_pooler": (feats, empty)},
        0,
    )
    ctx._teacher_features = {k: torch.randn(2, 64, *v.shape[-2:]) for k, v in s_feats.items()}
    losses = model.terms["lshfm"](ctx)
    assert set(losses) == {"loss_lshfm_l2", "loss_lshfm_lsh"}
    total = sum(losses.values())
    assert torch.isfinite(total) and total.item() == 0.0 and total.requires_grad
    total.backward()


def test_guard_names_the_mimic_term():
    losses = {"loss_cls": torch.tensor(1.0), "loss_lshfm_lsh": torch.tensor(float("nan"))}
    with pytest.raises(FloatingPointError, match="loss_lshfm_lsh=nan"):
        check_finite(losses, 12)
