"""The Distiller core: loss keys, frozen teacher, eval path, validation messages, the guard."""

import copy
import os

import pytest
import torch
from detectron2.config import instantiate
from detectron2.utils.events import EventStorage
from helpers import ROOT, load_cfg, tiny_batch
from torch import nn

from d2kd.distill import Distiller, LinearWarmup, Taps, Teacher, Window, check_finite
from d2kd.distill.terms.feature_mse import FeatureMSETerm
from d2kd.distill.term import KDTerm


@pytest.fixture(scope="module")
def cfg():
    return load_cfg()


@pytest.fixture(scope="module")
def batch(cfg):
    return tiny_batch(cfg)


def build(cfg, **overrides):
    node = copy.deepcopy(cfg.model)
    for k, v in overrides.items():
        node[k] = v
    return instantiate(node)


def test_training_step_logs_each_term_and_level(cfg, batch):
    model = build(cfg).train()
    with EventStorage(0):
        losses = model(batch)
    assert {"loss_cls", "loss_box_reg"} <= set(losses)
    assert {"loss_mse_p3", "loss_mse_p4", "loss_mse_p5"} <= set(losses)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())


def test_weight_is_applied_once_by_the_distiller(cfg, batch):
    torch.manual_seed(0)
    model = build(cfg).train()
    torch.manual_seed(0)
    model2 = copy.deepcopy(model)
    model2.weights["mse"] = LinearWarmup(weight=0.5, warmup_iters=4)  # 0.5 * 1/4 at iter 0
    with EventStorage(0):
        a = model(batch)["loss_mse_p3"]
        b = model2(batch)["loss_mse_p3"]
    torch.testing.assert_close(b, a / 4, rtol=1e-5, atol=0)


def test_zero_weight_skips_the_term(cfg, batch):
    model = build(cfg).train()
    model.weights["mse"] = Window(weight=1.0, start=10)
    with EventStorage(0):
        assert not any(k.startswith("loss_mse") for k in model(batch))


def test_weights_per_loss_key_longest_prefix_wins(cfg, batch):
    """``loss_mse`` weights every mse level, ``loss_mse_p4`` overrides it for p4, and a loss
    weighted 0 is left out of the step (the term still runs for the others)."""
    torch.manual_seed(0)
    ref = build(cfg).train()
    model = copy.deepcopy(ref)
    model2 = build(cfg, weights={"loss_mse": 2.0, "loss_mse_p4": 0.0, "loss_mse_p5": 3.0})
    model2.load_state_dict(model.state_dict())
    model2.train()
    with EventStorage(0):
        a, b = model(batch), model2(batch)
    # the tiny recipe's term weight is 0.5: loss-key weights replace it, they do not multiply
    torch.testing.assert_close(b["loss_mse_p3"], a["loss_mse_p3"] / 0.5 * 2.0, rtol=1e-5, atol=0)
    torch.testing.assert_close(b["loss_mse_p5"], a["loss_mse_p5"] / 0.5 * 3.0, rtol=1e-5, atol=0)
    assert "loss_mse_p4" not in b


def test_a_loss_key_weight_that_matches_nothing_is_refused(cfg, batch):
    model = build(cfg, weights={"loss_msee": 1.0}).train()
    with EventStorage(0), pytest.raises(ValueError, match="loss_msee.*match no loss"):
        model(batch)


def test_teacher_gets_no_gradient_student_and_adapters_do(cfg, batch):
    model = build(cfg).train()
    assert not model.teacher.training, "teacher must stay in eval mode"
    with EventStorage(0):
        losses = model(batch)
    sum(losses.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert model.terms["mse"].adapters["p3"].weight.grad is not None
    assert model.student.backbone.bottom_up.stem.conv1.weight.grad is not None
    # BN statistics of the teacher are untouched by training steps.
    bn = model.teacher.model.backbone.bottom_up.stem.conv1.norm
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_eval_mode_is_the_student_alone(cfg, batch):
    model = build(cfg).eval()
    model.teacher.model.forward = None  # any teacher call would fail
    inputs = [{"image": b["image"], "height": 64, "width": 64} for b in batch]
    with torch.no_grad():
        out = model(inputs)
        ref = model.student(inputs)
    assert len(out) == len(ref)
    torch.testing.assert_close(out[0]["instances"].scores, ref[0]["instances"].scores)
    for m in model.student.modules():
        assert not m._forward_hooks, "taps must not stay registered"


def test_unknown_level_names_the_level(cfg):
    with pytest.raises(ValueError, match=r"level 'p9' not in the student's backbone outputs"):
        build(cfg, terms={"mse": FeatureMSETerm(levels=["p9"])}, weights={})


def test_stride_mismatch_names_both_strides(cfg):
    term = FeatureMSETerm(levels=["p3"])
    student = instantiate(cfg.model.student)
    teacher = Teacher(instantiate(cfg.model.teacher.model))
    teacher.model.backbone._out_feature_strides["p3"] = 16
    with pytest.raises(
        ValueError, match=r"level 'p3' cannot be paired: student stride 8 != teacher stride 16"
    ):
        Distiller(student=student, teacher=teacher, terms={"mse": term})


def test_weights_for_unknown_terms_are_rejected(cfg):
    with pytest.raises(ValueError, match=r"unknown terms \['fgd'\]"):
        build(cfg, weights={"fgd": 1.0})


def test_missing_tap_is_named(cfg):
    class Needy(KDTerm):
        student_taps = ("backbone.p9",)

        def forward(self, ctx):
            return {}

    with pytest.raises(ValueError, match=r"tap 'backbone.p9' not found"):
        build(cfg, terms={"needy": Needy()}, weights={})


def test_spatial_mismatch_at_runtime_names_the_level(cfg, batch):
    model = build(cfg).train()
    model.teacher.model.backbone.bottom_up.stem.conv1.stride = (4, 4)
    with (
        EventStorage(0),
        pytest.raises(ValueError, match=r"level 'p3': student map .* teacher map"),
    ):
        model(batch)


def test_non_finite_guard_names_the_loss():
    losses = {"loss_cls": torch.tensor(1.0), "loss_mse_p4": torch.tensor(float("nan"))}
    with pytest.raises(FloatingPointError, match=r"iteration 7: loss_mse_p4=nan"):
        check_finite(losses, 7)
    check_finite({"a": torch.tensor(2.0)}, 0)


def test_guard_stops_a_nan_term_before_backward(cfg, batch):
    class NaNTerm(KDTerm):
        def forward(self, ctx):
            return {"loss_bad_p3": torch.tensor(float("nan"), requires_grad=True)}

    model = build(cfg, terms={"bad": NaNTerm()}, weights={}).train()
    with EventStorage(3), pytest.raises(FloatingPointError, match="loss_bad_p3"):
        model(batch)


def test_taps_record_and_remove():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    with Taps(net, ["0"]) as taps:
        net(torch.ones(1, 2))
        assert net[0]._forward_hooks
    assert taps.outputs["0"].shape == (1, 3)
    assert not net[0]._forward_hooks
    with pytest.raises(ValueError, match="tap '2' not found"):
        Taps(net, ["2"])


def test_schedules():
    warm = LinearWarmup(weight=2.0, warmup_iters=4, start=2)
    assert [warm(i) for i in range(7)] == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    win = Window(weight=3.0, start=1, end=3)
    assert [win(i) for i in range(4)] == [0.0, 3.0, 3.0, 0.0]


class _CountingTerm(KDTerm):
    """Records what the Distiller hands it: per-call tower outputs, teacher-loaded callbacks."""

    student_taps = ("backbone", "head.cls_subnet")

    def __init__(self):
        super().__init__()
        self.calls = []
        self.loaded_with = []

    def on_teacher_loaded(self, teacher):
        self.loaded_with.append(teacher)

    def forward(self, ctx):
        self.calls.append(ctx)
        towers = ctx.student_all_outputs.get("head.cls_subnet", [])
        zero = sum(t.sum() for t in towers) * 0 if towers else torch.zeros(())
        return {"loss_count": zero}


def test_all_outputs_hold_every_call_of_a_per_level_module(cfg, batch):
    term = _CountingTerm()
    model = build(cfg, terms={"count": term}, weights={}).train()
    with EventStorage(0):
        model(batch)
    towers = term.calls[-1].student_all_outputs["head.cls_subnet"]
    levels = model.student.head_in_features
    assert len(towers) == len(levels)
    feats = term.calls[-1].student_features
    assert [t.shape[-2:] for t in towers] == [feats[k].shape[-2:] for k in levels]


def test_teacher_free_distiller_runs_and_names_the_missing_teacher(cfg, batch):
    term = _CountingTerm()
    model = build(cfg, teacher=None, terms={"count": term}, weights={}).train()
    assert model.teacher_model is None and model._ddp_params_and_buffers_to_ignore == []
    with EventStorage(0):
        losses = model(batch)
    assert "loss_cls" in losses and "loss_count" in losses
    with pytest.raises(RuntimeError, match="no teacher"):
        term.calls[-1].teacher_features()


def test_without_student_losses_only_the_terms_run(cfg, batch):
    term = _CountingTerm()
    model = build(cfg, terms={"count": term}, weights={}, student_losses=False).train()
    with EventStorage(0):
        losses = model(batch)
    assert list(losses) == ["loss_count"]
    assert term.calls[-1].student_outputs == {}


def test_on_teacher_loaded_reaches_every_term(cfg, tmp_path):
    from d2kd.engine.train_loop import prepare_teacher

    term = _CountingTerm()
    model = build(cfg, terms={"count": term}, weights={})
    path = tmp_path / "t.pth"
    torch.save({"model": model.teacher.model.state_dict()}, path)
    model.teacher.weights = str(path)
    prepare_teacher(cfg, model)
    assert term.loaded_with == [model.teacher.model]


def test_a_teacher_with_a_smaller_size_divisibility_is_padded_like_the_student(cfg, batch):
    """A student padding to 128 (e.g. a P7 detector asking for it) under a Faster R-CNN teacher
    padding to 32: on 64 px crops their maps would differ; the teacher's batch gets the student's
    extra zero padding, so feature terms compare aligned maps, equal to the teacher's own on the
    zero-padded image. The other way round (the teacher pads more) is refused with both sizes."""
    import torch.nn.functional as F

    teacher_node = load_cfg(os.path.join(ROOT, "tests", "configs", "tiny_head.py")).model.teacher
    model = Distiller(
        student=instantiate(cfg.model.student),
        teacher=instantiate(teacher_node),
        terms={"mse": FeatureMSETerm(levels=["p3", "p4", "p5"])},
    ).train()
    model.student.backbone._size_divisibility = 128
    teacher = model.teacher_model
    captured = {}
    model.terms["mse"].register_forward_hook(
        lambda m, args, out: captured.update(p3=args[0].teacher_features()["p3"])
    )
    with EventStorage(0):
        losses = model(batch)
    assert {"loss_mse_p3", "loss_mse_p4", "loss_mse_p5"} <= set(losses)
    own = teacher.preprocess_image(batch).tensor
    assert tuple(own.shape[-2:]) == (64, 64)
    padded = F.pad(own, (0, 64, 0, 64))
    with torch.no_grad():
        torch.testing.assert_close(captured["p3"], teacher.backbone(padded)["p3"])

    model.student.backbone._size_divisibility = 32
    teacher.backbone._size_divisibility = 128
    with EventStorage(0), pytest.raises(ValueError, match=r"padded to \(64, 64\).*\(128, 128\)"):
        model(batch)
