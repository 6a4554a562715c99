"""Every recipe loads and builds; COCO recipes are built without weights or data."""

import glob
import os

import pytest
from detectron2.config import LazyConfig, instantiate
from helpers import ROOT

from d2kd.distill import Distiller

RECIPES = sorted(
    p
    for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    if os.sep + "common" + os.sep not in p and not p.endswith("models.py")
)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: os.path.relpath(p, ROOT))
def test_recipe_loads_and_names_its_parts(path):
    cfg = LazyConfig.load(path)
    for key in ("model", "dataloader", "optimizer", "lr_multiplier", "train"):
        assert key in cfg, f"{path} has no '{key}'"
    assert cfg.train.output_dir


@pytest.mark.parametrize("path", [p for p in RECIPES if "coco" in p], ids=os.path.basename)
def test_coco_distill_recipes_build(path):
    cfg = LazyConfig.load(path)
    model = instantiate(cfg.model)
    assert isinstance(model, Distiller)
    assert all(not p.requires_grad for p in model.teacher.parameters())


SYNTH_DISTILL = [
    os.path.join(ROOT, "configs", "quickstart", "mse_R18_from_R18w.py"),
    os.path.join(ROOT, "configs", "fgd", "retinanet_R18_from_R18w_synth.py"),
]


@pytest.fixture(scope="module")
def synth_teacher(tmp_path_factory):
    """A randomly initialised quickstart teacher: the recipes' mechanics need no trained one."""
    import torch

    cfg = LazyConfig.load(os.path.join(ROOT, "configs", "quickstart", "retinanet_R18w_teacher.py"))
    path = tmp_path_factory.mktemp("synth_teacher") / "teacher.pth"
    torch.save({"model": instantiate(cfg.model).state_dict()}, path)
    return str(path)


@pytest.mark.parametrize("path", SYNTH_DISTILL, ids=os.path.basename)
def test_synthetic_recipe_trains_20_iterations(path, synth_teacher, tmp_path):
    """The full-size synthetic recipe (models, schedule shape, KD terms) on the tiny split."""
    from helpers import run_train_net

    out = tmp_path / "run"
    proc = run_train_net(
        [
            "--config-file",
            path,
            f"train.output_dir={out}",
            f"model.teacher.weights={synth_teacher}",
            "train.max_iter=20",
            "train.device=cpu",
            "dataloader.train.total_batch_size=2",
            "dataloader.train.dataset.names=synth_tiny_train",
            "dataloader.test.dataset.names=synth_tiny_val",
        ],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model_final.pth").exists()
