"""HEAD as one KD term: keys, gradients, a frozen teacher, the checkpointed student, TF-HEAD,
and per-loss weights that can schedule one part without starving another."""

import os

import pytest
import torch
from detectron2.config import instantiate
from detectron2.utils.events import EventStorage
from helpers import ROOT, load_cfg, tiny_batch

from d2kd.distill import Distiller, LinearWarmup
from d2kd.distill.terms.head import HEADTerm
from d2kd.engine.checkpoint import DistillCheckpointer

TINY_HEAD = os.path.join(ROOT, "tests", "configs", "tiny_head.py")
TINY_TF_HEAD = os.path.join(ROOT, "tests", "configs", "tiny_head_tf.py")


@pytest.fixture(scope="module")
def cfg():
    return load_cfg(TINY_HEAD)


@pytest.fixture(scope="module")
def batch(cfg):
    return tiny_batch(cfg)


def _step(model, batch, iteration=0):
    with EventStorage(iteration):
        return model(batch)


def test_head_step_keys_gradients_and_frozen_teacher(cfg, batch):
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    losses = _step(model, batch)
    assert {"loss_cls", "loss_assist_cls", "loss_assist_box_reg"} <= set(losses)
    assert {"loss_akd_fc6", "loss_akd_fc7", "loss_ckd"} <= set(losses)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    head = model.terms["head"]
    assert head.assistant.box_head.fc1.weight.grad is not None
    assert all(a.weight.grad is not None for a in head.akd_adapters)
    assert head.ckd_adapter.weight.grad is not None
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    assert not model.teacher.training


def test_assistant_gradients_reach_the_student_fpn_and_backbone(cfg, batch):
    model = instantiate(cfg.model).train()
    losses = _step(model, batch)
    losses["loss_assist_cls"].backward()
    student = model.student
    assert student.backbone.fpn_output3.weight.grad is not None
    assert student.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    assert student.head.cls_score.weight.grad is None, "proposals are detached"


def test_ckd_warmup_weight_from_the_distiller(cfg):
    """tiny_head warms CKD up to 2.0 over 4 iterations: at iteration 1 the weight is 2 * 2/4."""
    model = instantiate(cfg.model).train()
    assert model.loss_weights["loss_ckd"](1) == pytest.approx(1.0)
    assert model.loss_weights["loss_ckd"](10) == pytest.approx(2.0)


def test_checkpoint_student_is_stock_and_kd_parts_are_apart(cfg, batch, tmp_path):
    model = instantiate(cfg.model).train()
    _step(model, batch)
    DistillCheckpointer(model, str(tmp_path)).save("model_final")
    data = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    student_keys = list(data["model"])
    assert not [k for k in student_keys if "assist" in k or "adapter" in k or "teacher" in k]
    stock = instantiate(cfg.model.student)  # a plain Detectron2 RetinaNet from the config
    stock.load_state_dict(data["model"], strict=True)
    distill = data["distill"]
    assert "head.assistant.box_head.fc1.weight" in distill
    assert "head.akd_adapters.0.weight" in distill and "head.ckd_adapter.weight" in distill


def test_assistant_initialised_from_the_teacher(cfg):
    model = instantiate(cfg.model)
    model.on_teacher_loaded()
    assistant = model.terms["head"].assistant
    teacher = model.teacher.model.roi_heads
    assert torch.equal(assistant.box_head.fc2.weight, teacher.box_head.fc2.weight)
    assert torch.equal(
        assistant.box_predictor.bbox_pred.weight, teacher.box_predictor.bbox_pred.weight
    )


def test_tf_head_has_no_teacher_and_a_detached_target(batch):
    cfg = load_cfg(TINY_TF_HEAD)
    model = instantiate(cfg.model).train()
    assert model.teacher is None
    losses = _step(model, batch)
    assert set(losses) >= {"loss_assist_cls", "loss_ckd"} and "loss_akd_fc6" not in losses
    losses["loss_ckd"].backward()
    assert model.terms["head"].assistant.box_head.fc2.weight.grad is None
    assert model.terms["head"].ckd_adapter.weight.grad is not None
    assert model.student.head.cls_subnet[0].weight.grad is not None


def test_assistant_warmup_does_not_starve_akd(cfg, batch):
    """A schedule that zeroes the assistant's own losses leaves AKD and CKD running (they share
    the step's assistant output inside one term, not through a zero-weight term)."""
    model = instantiate(cfg.model).train()
    model = Distiller(
        student=model.student,
        teacher=model.teacher,
        terms={"head": model.terms["head"]},
        weights={"loss_assist": LinearWarmup(weight=1.0, warmup_iters=4, start=5)},
    ).train()
    losses = _step(model, batch, iteration=0)
    assert not [k for k in losses if k.startswith("loss_assist")]
    assert {"loss_akd_fc6", "loss_akd_fc7", "loss_ckd"} <= set(losses)


def test_akd_without_a_two_stage_teacher_names_the_fix():
    with pytest.raises(TypeError, match="two-stage teacher"):
        cfg = load_cfg(TINY_TF_HEAD)
        model = instantiate(cfg.model)
        HEADTerm(akd=True, ckd=None, fc_dim=64).setup(model.student, None)


def test_ckd_target_is_checked():
    with pytest.raises(ValueError, match="ckd must be one of"):
        HEADTerm(ckd="teachr")
