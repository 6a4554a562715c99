"""Recipe-level extension points of the trainer: extra hooks (with resumable state) and a
custom trainer class, as IKD's adversarial schedule and DFAD's generator loop use them."""

import argparse

from detectron2.config import LazyCall as L
from detectron2.engine import HookBase, SimpleTrainer
from helpers import TINY_PLAIN, load_cfg

from d2kd.engine.train_loop import do_train


class StepCounter(HookBase):
    """Counts steps; its count is hook state that must survive --resume."""

    def __init__(self):
        self.count = 0

    def after_step(self):
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class TaggingTrainer(SimpleTrainer):
    """A SimpleTrainer that marks each step, to prove the recipe's trainer class is used."""

    steps = 0

    def run_step(self):
        TaggingTrainer.steps += 1
        super().run_step()


def _cfg(out, max_iter):
    cfg = load_cfg(TINY_PLAIN)
    cfg.train.output_dir = str(out)
    cfg.train.max_iter = max_iter
    cfg.train.checkpointer.period = 2
    cfg.train.hooks = [L(StepCounter)()]
    cfg.train.trainer = L(TaggingTrainer)()
    return cfg


def _hook(trainer_holder):
    return next(h for h in trainer_holder._hooks if isinstance(h, StepCounter))


def test_recipe_hooks_and_trainer_are_used_and_hook_state_resumes(tmp_path, monkeypatch):
    seen = {}
    original = SimpleTrainer.train

    def capture(self, start, end):
        seen["trainer"] = self
        return original(self, start, end)

    monkeypatch.setattr(SimpleTrainer, "train", capture)
    TaggingTrainer.steps = 0
    do_train(argparse.Namespace(resume=False), _cfg(tmp_path, 2))
    assert isinstance(seen["trainer"], TaggingTrainer) and TaggingTrainer.steps == 2
    assert _hook(seen["trainer"]).count == 2

    do_train(argparse.Namespace(resume=True), _cfg(tmp_path, 4))
    # Resumed from the iteration-2 checkpoint: the count continues from the saved 2.
    assert _hook(seen["trainer"]).count == 4 and TaggingTrainer.steps == 4
