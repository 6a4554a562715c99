"""FGD wired as a KD term: loss keys, logged parts, gradients, and the inheriting initialisation."""

import os

import pytest
import torch
from detectron2.config import instantiate
from detectron2.utils.events import EventStorage
from helpers import ROOT, load_cfg, tiny_batch

from d2kd.distill import inherit_from_teacher

TINY_FGD = os.path.join(ROOT, "tests", "configs", "tiny_fgd.py")


@pytest.fixture(scope="module")
def cfg():
    return load_cfg(TINY_FGD)


def test_fgd_step_keys_parts_and_gradients(cfg):
    model = instantiate(cfg.model).train()
    batch = tiny_batch(cfg)
    with EventStorage(0) as storage:
        losses = model(batch)
        assert {"loss_fgd_p3", "loss_fgd_p4", "loss_fgd_p5", "loss_cls"} <= set(losses)
        assert {"kd/fgd/p3/fg", "kd/fgd/p5/global"} <= set(storage.latest())
    sum(losses.values()).backward()
    fgd = model.terms["fgd"].loss.levels["p3"]
    assert fgd.align.weight.grad is not None, "32-ch student maps are aligned to 64 channels"
    assert fgd.gc_s.conv_mask.weight.grad is not None
    assert all(p.grad is None for p in model.teacher.parameters())


def test_inherit_copies_matching_neck_and_head(cfg):
    teacher = instantiate(cfg.model.teacher.model)
    same = instantiate(cfg.model.teacher.model)  # a student with the teacher's shapes
    copied, skipped = inherit_from_teacher(same, teacher)
    assert copied and not skipped
    assert all(not k.startswith("backbone.bottom_up.") for k in copied)
    assert any(k.startswith("backbone.fpn_") for k in copied) and any(
        k.startswith("head.") for k in copied
    )
    for k in copied:
        assert torch.equal(same.state_dict()[k], teacher.state_dict()[k]), k
    narrow = instantiate(cfg.model.student)  # 32-ch FPN: shapes differ, so nothing is forced
    copied, skipped = inherit_from_teacher(narrow, teacher)
    assert any("head.cls_subnet.0.weight" in s for s in skipped)
