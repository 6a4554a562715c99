"""IKD's AdversarialAugmentation hook: the window switches pair, augmentations and loss together,
at the right iteration, and its state survives --resume."""

import argparse
import json
from types import SimpleNamespace

import pytest
import torch
from detectron2.config import instantiate
from detectron2.engine import SimpleTrainer
from helpers import ROOT, load_cfg

from d2kd.data.adversarial_mapper import AdversarialPairMapper, IterationAwareBatchStream
from d2kd.data.loader import build_resumable_train_loader
from d2kd.distill.schedule import Window
from d2kd.engine.adversarial import AdversarialAugmentation
from d2kd.engine.train_loop import do_train

TINY_IKD = f"{ROOT}/tests/configs/tiny_ikd.py"


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    teacher = instantiate(load_cfg(TINY_IKD).model.teacher.model)
    path = str(tmp_path_factory.mktemp("ikd_teacher") / "teacher.pth")
    torch.save({"model": teacher.state_dict()}, path)
    return path


def _cfg(out, teacher, max_iter, end_iter):
    cfg = load_cfg(TINY_IKD)
    cfg.train.output_dir = str(out)
    cfg.train.max_iter = max_iter
    cfg.model.teacher.weights = teacher
    cfg.train.hooks[0].window.end = end_iter
    del cfg.dataloader.evaluator  # no final evaluation: only the schedule is under test
    return cfg


def _metrics(out):
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return {r["iteration"]: r for r in rows if "loss_ikd_adv_p3" in r}


def _raw(trainer, key):
    """Unsmoothed per-iteration values from the run's event storage."""
    return {int(i): v for v, i in trainer.storage.history(key).values()}


@pytest.fixture
def trainers(monkeypatch):
    seen = []
    original = SimpleTrainer.train

    def capture(self, start, end):
        seen.append(self)
        return original(self, start, end)

    monkeypatch.setattr(SimpleTrainer, "train", capture)
    return seen


def _hook(trainer):
    return next(h for h in trainer._hooks if isinstance(h, AdversarialAugmentation))


def test_window_switches_loss_and_pairs_at_the_right_iteration(tmp_path, teacher_ckpt, trainers):
    do_train(argparse.Namespace(resume=False), _cfg(tmp_path, teacher_ckpt, 4, 2))
    rows = _metrics(tmp_path)
    assert [rows[i]["ikd/active"] for i in range(4)] == [1, 1, 0, 0]
    loss = _raw(trainers[-1], "loss_ikd_adv_p3")
    assert loss[0] > 0 and loss[1] > 0 and loss[2] == 0 and loss[3] == 0, loss
    # Online, fraction 0.5 of 2 images: one adversarial image per active step.
    assert _raw(trainers[-1], "kd/ikd_adv/images") == {0: 1.0, 1: 1.0}
    hook = _hook(trainers[-1])
    assert hook.switched_off_at == 2
    # One Window object, shared by the hook, the term and the mapper (not three copies).
    mapper = trainers[-1].data_loader.dataset.mapper
    term = trainers[-1].model.terms["ikd_adv"]
    assert hook.window == Window(start=0, end=2)
    assert mapper.window is hook.window and term.window is hook.window
    ckpt = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer"]["hooks"]["AdversarialAugmentation"]["switched_off_at"] == 2


def test_state_and_switch_survive_resume(tmp_path, teacher_ckpt, trainers):
    # Off at iteration 1, checkpoint after iteration 1, then resume to 4.
    do_train(argparse.Namespace(resume=False), _cfg(tmp_path, teacher_ckpt, 2, 1))
    assert _hook(trainers[-1]).switched_off_at == 1
    do_train(argparse.Namespace(resume=True), _cfg(tmp_path, teacher_ckpt, 4, 1))
    hook = _hook(trainers[-1])
    assert hook.switched_off_at == 1, "restored from the checkpoint, not re-detected at 2"
    rows = _metrics(tmp_path)
    assert [rows[i]["ikd/active"] for i in range(4)] == [1, 0, 0, 0]
    assert _raw(trainers[-1], "loss_ikd_adv_p3") == {2: 0.0, 3: 0.0}
    # A window ending after the resume point switches off there.
    out2 = tmp_path / "b"
    do_train(argparse.Namespace(resume=False), _cfg(out2, teacher_ckpt, 2, 3))
    do_train(argparse.Namespace(resume=True), _cfg(out2, teacher_ckpt, 4, 3))
    assert _hook(trainers[-1]).switched_off_at == 3
    rows = _metrics(out2)
    assert [rows[i]["ikd/active"] for i in range(4)] == [1, 1, 1, 0]


def test_bad_window_is_named():
    with pytest.raises(ValueError, match=r"\[AdversarialAugmentation\].*start=5, end=5"):
        AdversarialAugmentation(window=Window(start=5, end=5))
    with pytest.raises(TypeError, match=r"\[AdversarialAugmentation\] window must be a"):
        AdversarialAugmentation(window=(0, 5))


class RenamedStream(IterationAwareBatchStream):
    """A subclass under another name: still tells the mapper the iteration."""


def test_stream_and_mapper_are_recognised_by_type_not_name():
    """The hook accepts any IterationAwareBatchStream with workers, and refuses other streams."""
    dicts = [{"file_name": "unused.png", "height": 8, "width": 8, "image_id": 0}]
    mapper = AdversarialPairMapper([])
    hook = AdversarialAugmentation(window=Window(start=0, end=3), attack=lambda *a: [])
    loader = build_resumable_train_loader(
        dicts, mapper=mapper, total_batch_size=1, num_workers=2, stream_cls=RenamedStream
    )
    hook.trainer = SimpleNamespace(data_loader=loader)
    assert hook._find_mapper() is mapper
    plain = build_resumable_train_loader(dicts, mapper=mapper, total_batch_size=1, num_workers=2)
    hook.trainer = SimpleNamespace(data_loader=plain)
    with pytest.raises(RuntimeError, match="cannot learn the iteration"):
        hook._find_mapper()
