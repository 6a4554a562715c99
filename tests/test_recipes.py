"""Every recipe loads and builds; COCO recipes are built without weights or data; every
synthetic-scale recipe trains 4 iterations and logs exactly the losses it must, all finite."""

import glob
import json
import math
import os

import pytest
from detectron2.config import LazyConfig, instantiate
from helpers import ROOT

from d2kd.distill import Distiller

RECIPES = sorted(
    p
    for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    if os.sep + "common" + os.sep not in p
    and not p.endswith("models.py")
    and not os.path.basename(p).startswith("_")  # helper modules of a method's recipes
)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: os.path.relpath(p, ROOT))
def test_recipe_loads_and_names_its_parts(path, tmp_path):
    cfg = LazyConfig.load(path)
    for key in ("model", "dataloader", "optimizer", "lr_multiplier", "train"):
        assert key in cfg, f"{path} has no '{key}'"
    assert cfg.train.output_dir
    # Every ${...} resolves: a run saves its config.yaml before the first step, and an
    # interpolation into a replaced node (DFAD's test mapper into COCO's train mapper, which
    # NoiseLoader replaced) stopped it there.
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))


@pytest.mark.parametrize(
    "path", [p for p in RECIPES if "coco" in p], ids=lambda p: os.path.relpath(p, ROOT)
)
def test_coco_distill_recipes_build(path):
    cfg = LazyConfig.load(path)
    model = instantiate(cfg.model)
    assert isinstance(model, Distiller)
    if model.teacher is not None:  # teacher-free recipes: HEAD's assist rows, TF-HEAD
        assert all(not p.requires_grad for p in model.teacher.parameters())


# Every synthetic-scale distillation recipe (configs/<method>/*synth*.py), found by name so each
# method's recipes are trained here as soon as they exist.
SYNTH_DISTILL = sorted(
    p for p in RECIPES if "synth" in os.path.basename(p) or os.path.basename(p).startswith("mse_")
)

# Smoke-scale overrides, each applied only where the recipe has the key (a data-free recipe has
# no training dataset, a teacher-free one no teacher weights).
SMOKE_OVERRIDES = {
    "train.max_iter": "4",  # enough to log every loss; the losses have unit tests
    "train.device": "cpu",
    "dataloader.train.total_batch_size": "2",
    "dataloader.train.dataset.names": "synth_tiny_train",
    "dataloader.test.dataset.names": "synth_tiny_val",
    "train.teacher_check.num_images": "0",  # the teachers here are random: the check refuses them
}


def random_teacher_weights(cfg, folder) -> str:
    """The recipe's own teacher, randomly initialised: recipes' mechanics need no trained one."""
    import torch

    path = os.path.join(str(folder), "teacher.pth")
    torch.save({"model": instantiate(cfg.model.teacher.model).state_dict()}, path)
    return path


def smoke_overrides(cfg, folder, path=None):
    from omegaconf import OmegaConf

    out = [f"{k}={v}" for k, v in SMOKE_OVERRIDES.items() if OmegaConf.select(cfg, k) is not None]
    if OmegaConf.select(cfg, "model.teacher.weights", default=None) is not None:
        teacher = random_teacher_weights(cfg, folder)
        out.append(f"model.teacher.weights={teacher}")
        if OmegaConf.select(cfg, "dataloader.train.mapper.adv_dir", default=None):
            out += adversarial_copies(path, folder, teacher)
    return out


def adversarial_copies(path, folder, teacher):
    """IKD's offline recipes read stored adversarial copies: make 1-step ones of the tiny split."""
    import subprocess
    import sys

    adv = os.path.join(str(folder), "adv")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "gen_adversarial.py"), "--config-file"]
    cmd += [path, "--dataset", "synth_tiny_train"]
    cmd += ["--output-dir", adv, "--steps", "1", "--device", "cpu"]
    cmd += [f"model.teacher.weights={teacher}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [
        f"dataloader.train.mapper.adv_dir={adv}",
        "dataloader.train.mapper.expected_settings.steps=1",
    ]


# The losses each synthetic recipe must log (Detectron2's metrics.json): the student's own
# detection losses and each KD term's keys (listed in the terms' docstrings).
RETINANET = {"loss_cls", "loss_box_reg"}
FASTER_RCNN = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
LSHL2 = {"loss_lshfm_l2", "loss_lshfm_lsh"}
ASSIST = {"loss_assist_cls", "loss_assist_box_reg"}
AKD = {"loss_akd_fc6", "loss_akd_fc7"}


def p3_p7(prefix: str) -> set:
    return {f"{prefix}_p{i}" for i in range(3, 8)}


EXPECTED_LOSSES = {
    "quickstart/mse_R18_from_R18w.py": RETINANET | p3_p7("loss_mse"),
    "fgd/retinanet_R18_from_R18w_synth.py": RETINANET | p3_p7("loss_fgd"),
    "lshfm/retinanet_R18_from_R18w_synth_lshl2.py": RETINANET | LSHL2,
    "lshfm/retinanet_R18_from_R18w_synth_l2.py": RETINANET | {"loss_lshfm_l2"},
    "lshfm/retinanet_R18_from_R18w_synth_lsh.py": RETINANET | {"loss_lshfm_lsh"},
    "lshfm/faster_rcnn_R18_from_R18w_synth_lshl2.py": FASTER_RCNN | LSHL2,
    "head/retinanet_R18_from_R18w_synth_akd_ckd.py": RETINANET | ASSIST | AKD | {"loss_ckd"},
    "head/retinanet_R18_from_R18w_synth_akd.py": RETINANET | ASSIST | AKD,
    "head/retinanet_R18_from_R18w_synth_assist.py": RETINANET | ASSIST,
    "head/retinanet_R18_tf_head_synth.py": RETINANET | ASSIST | {"loss_ckd"},
    "ikd/retinanet_R18_from_R18w_synth_offline.py": (
        RETINANET | p3_p7("loss_fgd") | p3_p7("loss_ikd_adv")
    ),
    "ikd/retinanet_R18_from_R18w_synth_online.py": (
        RETINANET | p3_p7("loss_fgd") | p3_p7("loss_ikd_adv")
    ),
    # student_losses=False: the discrepancy is the student's only loss.
    "dfad/retinanet_R18_from_R18w_synth.py": {"loss_dfad_cls", "loss_dfad_box"},
    "dfad/retinanet_R18_from_R18w_synth_real.py": {"loss_dfad_cls", "loss_dfad_box"},
}


# The student's own losses by its class, for recipes without an entry above: their KD keys are
# what their terms declare (KDTerm.loss_keys), so a new method's recipe needs no entry here.
STUDENT_LOSSES = {"RetinaNet": RETINANET, "GeneralizedRCNN": FASTER_RCNN}


def recipe_key(path: str) -> str:
    return os.path.relpath(path, os.path.join(ROOT, "configs")).replace(os.sep, "/")


def declared_losses(path: str):
    """The losses the recipe's built parts declare: its student's own (by class, unless
    ``student_losses=False``) and every term's ``loss_keys()``; None when a term declares none or
    the student's class is not in STUDENT_LOSSES."""
    model = instantiate(LazyConfig.load(path).model)  # no weights are loaded
    student = STUDENT_LOSSES.get(type(model.student).__name__)
    if not model.student_losses:
        student = set()
    keys = [term.loss_keys() for term in model.terms.values()]
    if student is None or any(k is None for k in keys):
        return None
    return set(student).union(*keys)


def expected_losses(path: str):
    """The hand-written entry if there is one, else what the recipe's parts declare."""
    return EXPECTED_LOSSES.get(recipe_key(path)) or declared_losses(path)


def test_synthetic_recipes_are_found():
    names = {os.path.basename(p) for p in SYNTH_DISTILL}
    assert {"mse_R18_from_R18w.py", "retinanet_R18_from_R18w_synth.py"} <= names
    missing = sorted(recipe_key(p) for p in SYNTH_DISTILL if expected_losses(p) is None)
    assert not missing, (
        "these recipes' terms do not declare their loss keys (KDTerm.loss_keys): declare them, "
        f"or add the losses the recipes must log to EXPECTED_LOSSES: {missing}"
    )


@pytest.mark.parametrize("key", sorted(EXPECTED_LOSSES))
def test_declared_losses_match_the_hand_written_ones(key):
    """Where a recipe's terms declare their keys, they are the ones written by hand above."""
    declared = declared_losses(os.path.join(ROOT, "configs", key))
    assert declared in (None, EXPECTED_LOSSES[key])


def logged_losses(run_dir) -> dict:
    """Loss key -> every value Detectron2's JSONWriter wrote to ``run_dir/metrics.json``."""
    values: dict = {}
    with open(os.path.join(str(run_dir), "metrics.json")) as f:
        for line in f:
            for key, value in json.loads(line).items():
                if key.startswith("loss_"):
                    values.setdefault(key, []).append(value)
    return values


@pytest.mark.parametrize("path", SYNTH_DISTILL, ids=lambda p: os.path.relpath(p, ROOT))
def test_synthetic_recipe_trains_20_iterations(path, tmp_path):
    """The full-size synthetic recipe (models, schedule shape, KD terms) on the tiny split."""
    from helpers import run_train_net

    cfg = LazyConfig.load(path)
    out = tmp_path / "run"
    proc = run_train_net(
        ["--config-file", path, f"train.output_dir={out}", *smoke_overrides(cfg, tmp_path, path)],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model_final.pth").exists()
    logged = logged_losses(out)
    expected = expected_losses(path)
    assert (
        set(logged) == expected
    ), f"missing {sorted(expected - set(logged))}, unexpected {sorted(set(logged) - expected)}"
    bad = {k: v for k, v in logged.items() if not all(math.isfinite(x) for x in v)}
    assert not bad, f"non-finite losses logged: {bad}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: os.path.relpath(p, ROOT))
def test_distillation_recipes_check_their_teacher_first(path):
    """A teacher that outputs nothing (an untrained or mis-loaded one) must stop a distillation
    run before its first step: every recipe with a teacher keeps the check on."""
    cfg = LazyConfig.load(path)
    if cfg.model.get("teacher", None) is None:
        return
    check = cfg.train.teacher_check
    assert check.num_images > 0 and check.min_ap > 0, f"{path}: {check}"
