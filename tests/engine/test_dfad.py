"""DFAD's loop: noise-only training data, one model changed per step, resume of the generator."""

import os
from types import SimpleNamespace

import pytest
import torch
from detectron2.config import instantiate
from detectron2.utils.events import EventStorage
from helpers import ROOT, load_cfg

from d2kd.data import NoiseLoader
from d2kd.engine import DFADTrainer, GeneratorStep
from d2kd.engine.train_loop import do_train

TINY_DFAD = os.path.join(ROOT, "tests", "configs", "tiny_dfad.py")


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    after = module.state_dict()
    return sorted(k for k, v in before.items() if not torch.equal(v, after[k]))


def _built(cfg):
    """The tiny Distiller, its optimizer, the DFAD trainer and its GeneratorStep hook."""
    model = instantiate(cfg.model).train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    loader = instantiate(cfg.dataloader.train)
    trainer = DFADTrainer(model, loader, optimizer, student_steps=cfg.train.trainer.student_steps)
    hook = instantiate(cfg.train.hooks[0])
    trainer.register_hooks([hook])
    trainer.max_iter = 4
    return model, trainer, hook


@pytest.fixture()
def cfg(tmp_path):
    cfg = load_cfg(TINY_DFAD)
    cfg.train.output_dir = str(tmp_path / "run")
    return cfg


def test_noise_loader_streams_per_rank_and_resumes(monkeypatch):
    loader = NoiseLoader(total_batch_size=4, nz=8, draws=3, seed=1)
    first = next(iter(loader))
    assert first.shape == (3, 4, 8)
    loader.set_start_iter(5)
    assert torch.equal(next(iter(loader)), loader.noise_at(5))
    assert not torch.equal(loader.noise_at(5), loader.noise_at(6))
    import d2kd.data.noise as noise_mod

    monkeypatch.setattr(noise_mod.comm, "get_rank", lambda: 1)
    other_rank = NoiseLoader(total_batch_size=4, nz=8, draws=3, seed=1)
    assert not torch.equal(other_rank.noise_at(0), first), "ranks must draw different noise"


def test_generator_step_changes_only_the_generator(cfg):
    model, trainer, hook = _built(cfg)
    student, teacher, gen = _state(model.student), _state(model.teacher), _state(hook.generator)
    with EventStorage(0):
        scalars = hook.step(torch.randn(2, 16), iteration=0)
    assert scalars["dfad/discrepancy"] > 0 and scalars["dfad/loss_generator"] < 0
    assert _changed(student, model.student) == [], "student parameters or BN stats changed"
    assert _changed(teacher, model.teacher) == []
    assert all(p.grad is None for p in model.student.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())
    changed = _changed(gen, hook.generator)
    assert any(k.endswith("weight") for k in changed), changed


def test_student_step_changes_only_the_student(cfg, monkeypatch):
    model, trainer, hook = _built(cfg)
    monkeypatch.setattr(hook, "step", lambda z, iteration: {})  # the student steps alone
    student, teacher, gen = _state(model.student), _state(model.teacher), _state(hook.generator)
    with EventStorage(0) as storage:
        trainer.storage = storage
        trainer.run_step()
        assert {"loss_dfad_cls", "loss_dfad_box"} <= set(storage.latest())
    assert _changed(gen, hook.generator) == [], "generator parameters or BN stats changed"
    assert _changed(teacher, model.teacher) == []
    assert any(k.startswith("head.") for k in _changed(student, model.student))


def test_trainer_rejects_a_loader_of_images(cfg):
    model, trainer, hook = _built(cfg)
    trainer.data_loader = iter([[{"image": torch.zeros(3, 64, 64)}]])
    trainer._data_loader_iter_obj = None
    with EventStorage(0) as storage, pytest.raises(TypeError, match="NoiseLoader"):
        trainer.storage = storage
        trainer.run_step()


def _train(cfg, max_iter, resume=False):
    teacher = os.path.join(os.path.dirname(cfg.train.output_dir), "teacher.pth")
    if not os.path.exists(teacher):  # a random teacher: the loop's mechanics need no trained one
        torch.save({"model": instantiate(cfg.model.teacher.model).state_dict()}, teacher)
    cfg.model.teacher.weights = teacher
    cfg.train.max_iter = max_iter
    cfg.dataloader.pop("evaluator")  # no evaluation: these tests read no image at all
    return do_train(SimpleNamespace(resume=resume), cfg)


def test_training_reads_no_image_and_resumes_the_generator(cfg, monkeypatch):
    import detectron2.data.detection_utils as d2_utils
    from detectron2.data import DatasetCatalog

    def forbidden(*args, **kwargs):
        raise AssertionError("DFAD training read a dataset or an image")

    monkeypatch.setattr(DatasetCatalog, "get", forbidden)
    monkeypatch.setattr(d2_utils, "read_image", forbidden)
    assert isinstance(next(iter(instantiate(cfg.dataloader.train))), torch.Tensor)

    _train(cfg.copy(), max_iter=2)
    out = cfg.train.output_dir
    saved = torch.load(os.path.join(out, "model_final.pth"), weights_only=False)
    state = saved["trainer"]["hooks"]["GeneratorStep"]
    assert state["optimizer"]["state"], "the generator's Adam state is checkpointed"
    assert sorted(os.listdir(os.path.join(out, "generator"))) == ["iter_0000002.pt"]

    restored = {}
    original = GeneratorStep.load_state_dict

    def recording(self, sd):
        original(self, sd)
        restored["generator"] = _state(self.generator)
        restored["adam_steps"] = [float(s["step"]) for s in self.optimizer.state.values()]

    monkeypatch.setattr(GeneratorStep, "load_state_dict", recording)
    _train(cfg.copy(), max_iter=3, resume=True)
    for k, v in state["generator"].items():
        assert torch.equal(restored["generator"][k], v), k
    assert restored["adam_steps"] and set(restored["adam_steps"]) == {2.0}
    final = torch.load(os.path.join(out, "model_final.pth"), weights_only=False)
    assert final["iteration"] == 2  # the resumed run trained iteration 2 only (0-based)
    _check_visualize(out)


def _check_visualize(out):
    """tools/visualize.py generator: from the hook's dumps, and from the checkpoints."""
    import importlib.util
    import subprocess
    import sys

    tool = os.path.join(ROOT, "tools", "visualize.py")
    png = os.path.join(out, "generator.png")
    proc = subprocess.run(
        [sys.executable, tool, "generator", "--output-dir", out, "--output", png],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    spec = importlib.util.spec_from_file_location("d2kd_visualize", tool)
    vis = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vis)
    args = SimpleNamespace(
        output_dir=os.path.join(out, "no_dumps_here"), config_file=TINY_DFAD, opts=[], count=3
    )
    os.makedirs(args.output_dir)
    for name in ("model_0000001.pth", "model_final.pth"):
        os.link(os.path.join(out, name), os.path.join(args.output_dir, name))
    snaps = vis._generator_snapshots(args)
    assert [it for it, _ in snaps] == [2, 3] and snaps[0][1].shape == (3, 3, 64, 64)


def test_term_differentiates_through_the_teacher_only_when_asked(cfg):
    model = instantiate(cfg.model).train()
    term, student, teacher = model.terms["dfad"], model.student, model.teacher_model
    grads = []
    for teacher_grad in (False, True):
        images = torch.rand(2, 3, 64, 64, requires_grad=True)
        inputs = [{"image": x * 255} for x in images]
        parts = term.discrepancy(student, teacher, inputs, teacher_grad=teacher_grad)
        assert set(parts) == {"loss_dfad_cls", "loss_dfad_box"}
        sum(parts.values()).backward()
        grads.append(images.grad)
    assert not torch.allclose(grads[0], grads[1]), "the teacher path adds an input gradient"
    assert all(p.grad is None for p in teacher.parameters())


def test_term_on_faster_rcnn_compares_rpn_and_roi_heads():
    model = instantiate(
        load_cfg(os.path.join(ROOT, "tests", "configs", "tiny_dfad_frcnn.py")).model
    )
    model.train()
    term, student, teacher = model.terms["dfad"], model.student, model.teacher_model
    inputs = [{"image": torch.rand(3, 64, 64) * 255} for _ in range(2)]
    parts = term.discrepancy(student, teacher, inputs)
    expected = {"rpn_obj", "rpn_box", "roi_cls", "roi_box", "fpn_p3"}
    assert set(parts) == {f"loss_dfad_{k}" for k in expected}
    sum(parts.values()).backward()
    assert student.roi_heads.box_predictor.cls_score.weight.grad is not None
    assert term.adapters["p3"].weight.grad is not None  # 32 -> 64 channels
    assert all(p.grad is None for p in teacher.parameters())


# ---- the foreground-aware form and the BN prior ----------------------------------------------
def _forms(model, **kwargs):
    from d2kd.distill.terms.dfad import DFADTerm

    term = DFADTerm(**kwargs)
    term.setup(model.student, model.teacher_model)
    return term


def test_foreground_form_with_all_weights_one_is_the_official_form(cfg):
    """floor=1 makes every anchor's weight 1 and box_threshold=0 keeps every anchor, so the
    foreground form's l1 parts equal the paper's all-anchor mean L1 on the same tensors."""
    model = instantiate(cfg.model).train()
    inputs = [{"image": torch.rand(3, 64, 64) * 255} for _ in range(2)]
    args = (model.student, model.teacher_model, inputs)
    official = _forms(model).discrepancy(*args)
    uniform = _forms(model, form="foreground", floor=1.0, box_threshold=0.0).discrepancy(*args)
    assert set(official) == set(uniform) == {"loss_dfad_cls", "loss_dfad_box"}
    for k in official:
        torch.testing.assert_close(uniform[k], official[k])
    fg = _forms(model, form="foreground", cls_distance="bce").discrepancy(*args)
    assert all(torch.isfinite(v) for v in fg.values())


def test_foreground_form_on_faster_rcnn_has_the_same_parts():
    model = instantiate(
        load_cfg(os.path.join(ROOT, "tests", "configs", "tiny_dfad_frcnn.py")).model
    ).train()
    inputs = [{"image": torch.rand(3, 64, 64) * 255} for _ in range(2)]
    parts = _forms(model, form="foreground", features=["p3"]).discrepancy(
        model.student, model.teacher_model, inputs
    )
    expected = {"rpn_obj", "rpn_box", "roi_cls", "roi_box", "fpn_p3"}
    assert set(parts) == {f"loss_dfad_{k}" for k in expected}
    assert all(torch.isfinite(v) for v in parts.values())
    with pytest.raises(ValueError, match="form must be one of"):
        _forms(model, form="fg")


def test_bn_prior_joins_the_generator_loss_and_moves_the_generator(cfg):
    model, trainer, hook = _built(cfg)
    hook.bn_prior = 0.5
    gen = _state(hook.generator)
    with EventStorage(0):
        hook.before_train()
        scalars = hook.step(torch.randn(2, 16), iteration=0)
    assert scalars["dfad/bn_prior"] > 0
    expected = -torch.log1p(torch.tensor(scalars["dfad/discrepancy"])) + 0.5 * scalars["dfad/bn_prior"]
    assert scalars["dfad/loss_generator"] == pytest.approx(float(expected), rel=1e-5)
    assert _changed(gen, hook.generator)


def test_bn_prior_with_a_teacher_without_batchnorm_is_refused_before_training(cfg):
    from detectron2.layers import FrozenBatchNorm2d

    model, trainer, hook = _built(cfg)
    FrozenBatchNorm2d.convert_frozen_batchnorm(model.teacher_model)
    hook.bn_prior = 0.5
    with pytest.raises(ValueError, match="no BatchNorm layer with running statistics.*weight to 0"):
        hook.before_train()
