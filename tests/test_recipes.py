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
