"""CI smoke of benchmarks/coco_scale_check.py: its datasets, and one recipe at 128 px.

The full check (every COCO/VOC recipe at its real input size) is a benchmark command, not a test.
"""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import coco_scale_check  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_datasets_are_what_detectron2s_builtin_loaders_read(tmp_path):
    """COCO json with all 80 categories and VOC xml with its 20 classes, at the scaled sizes, in
    the layout of $DETECTRON2_DATASETS (read here with the loaders the builtin names use)."""
    from detectron2.data.datasets import load_coco_json
    from detectron2.data.datasets.pascal_voc import CLASS_NAMES, load_voc_instances

    coco_scale_check.build_datasets(tmp_path, size=64)
    coco = json.loads((tmp_path / "coco/annotations/instances_train2017.json").read_text())
    assert len(coco["categories"]) == 80 and len(coco["images"]) == 4
    val = load_coco_json(
        str(tmp_path / "coco/annotations/instances_val2017.json"), str(tmp_path / "coco/val2017")
    )
    assert len(val) == 2 and (val[0]["height"], val[0]["width"]) == (64, 107)
    assert all(a["segmentation"] and a["bbox"][2] > 0 for d in val for a in d["annotations"])
    voc = [
        load_voc_instances(str(tmp_path / year), split, CLASS_NAMES)
        for year, split in (("VOC2007", "trainval"), ("VOC2012", "trainval"), ("VOC2007", "test"))
    ]
    assert [len(v) for v in voc] == [2, 2, 2]
    assert (voc[2][0]["height"], voc[2][0]["width"]) == (30, 40)
    assert all(0 <= a["category_id"] < 20 for v in voc for d in v for a in d["annotations"])


def test_one_recipe_takes_two_steps_and_evaluates(tmp_path, capsys):
    recipe = "configs/head/retinanet_R18_from_R50_faster_coco_1x.py"
    assert recipe in coco_scale_check.recipes()
    published = ROOT / "benchmarks" / "results" / "coco_scale.json"
    before = published.read_bytes() if published.is_file() else None
    argv = ["--size", "128", "--recipes", recipe, "--out", str(tmp_path)]
    assert coco_scale_check.main(argv) == 0, capsys.readouterr().out[-3000:]
    data = json.loads((tmp_path / "coco_scale.json").read_text())
    (row,) = data["rows"]
    assert row["status"] == "ok" and row["error"] is None
    assert row["s_per_iter"] > 0 and row["peak_rss_mb"] > 100 and row["wall_s"] > 0
    assert row["input"] == "128 ≤213 / 128 ≤213" and (row["batch"], row["recipe_batch"]) == (2, 16)
    run = tmp_path / "head" / "retinanet_R18_from_R50_faster_coco_1x" / "batch2"
    assert (run / "eval_last.json").is_file() and not list(run.glob("*.pth"))
    assert "| head/retinanet_R18_from_R50_faster_coco_1x.py | ok |" in capsys.readouterr().out
    after = published.read_bytes() if published.is_file() else None
    assert after == before, "a run at another size must not publish"
