"""Helpers shared by tests: build tiny models and batches from the test recipes."""

import os
import subprocess
import sys
from typing import List, Sequence

import torch
from detectron2.config import LazyConfig, instantiate

import d2kd.data  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_DISTILL = os.path.join(ROOT, "tests", "configs", "tiny_distill.py")
TINY_PLAIN = os.path.join(ROOT, "tests", "configs", "tiny_plain.py")
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")


def load_cfg(path: str = TINY_DISTILL):
    return LazyConfig.load(path)


def tiny_batch(cfg=None, n: int = 1) -> List[dict]:
    """The first ``n`` training batches of a recipe's loader, concatenated."""
    cfg = cfg or load_cfg()
    loader = instantiate(cfg.dataloader.train)
    it = iter(loader)
    out = []
    for _ in range(n):
        out.extend(next(it))
    return out


def run_train_net(args: Sequence[str], timeout: int = 300, env=None) -> subprocess.CompletedProcess:
    """Run tools/train_net.py in a subprocess and capture its output."""
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, TRAIN_NET, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=ROOT,
    )


def save_plain_checkpoint(model: torch.nn.Module, path: str) -> str:
    torch.save({"model": model.state_dict()}, path)
    return path
