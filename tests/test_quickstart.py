"""tools/quickstart.py end to end on tiny data with a stand-in teacher (seconds, not minutes)."""

import json
import os
import subprocess
import sys

import torch
from detectron2.config import LazyConfig, instantiate
from helpers import ROOT


def test_quickstart_runs_students_side_by_side_and_writes_the_table(tmp_path):
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    cfg = LazyConfig.load(os.path.join(ROOT, "configs", "quickstart", "retinanet_R18w_teacher.py"))
    torch.save({"model": instantiate(cfg.model).state_dict()}, teacher_dir / "model_final.pth")
    stub = {"bbox": {k: 1.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}}
    (teacher_dir / "eval_final.json").write_text(json.dumps(stub))
    out = tmp_path / "qs"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "quickstart.py"),
            "--output",
            str(out),
            "--teacher-dir",
            str(teacher_dir),
            "--device",
            "cpu",
            "train.max_iter=2",
            "dataloader.train.dataset.names=synth_tiny_train",
            "dataloader.test.dataset.names=synth_tiny_val",
            "train.teacher_check.num_images=0",  # the stand-in teacher is random
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| teacher R18-wide | 1.0 |" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {
        "teacher R18-wide",
        "student R18 baseline",
        "student R18 distilled (MSE)",
    }
    assert (
        results["hardware"]["device"] == "cpu" and results["schedule_max_iter"]["teacher"] == 3600
    )
    assert (out / "mse" / "model_final.pth").exists() and (
        out / "baseline" / "model_final.pth"
    ).exists()
    said = proc.stdout + proc.stderr
    assert "results in " in said and "results.json" in said and "student baseline" in said
