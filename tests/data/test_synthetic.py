"""Tests of the embedded synthetic detection dataset (d2kd.data.synthetic)."""

import hashlib
import json
import multiprocessing as mp
import subprocess
import sys

import numpy as np
import pytest

import d2kd.data  # noqa: F401  (registers the builtin datasets)
from d2kd.data import SYNTHETIC_CLASSES, SyntheticSpec, register_synthetic, render_synthetic
from d2kd.data import synthetic
from d2kd.data.synthetic import DATASET_VERSION, PlacedItem, compose_scene

SMALL = SyntheticSpec(num_train=6, num_val=3, seed=7)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Never write into the home directory, whatever a test forgets to pass."""
    monkeypatch.setenv("D2KD_CACHE", str(tmp_path / "default_cache"))


def _files(directory):
    """Map relative path -> bytes of every file under a dataset directory."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_spec_key_is_stable_and_versioned():
    assert SMALL.key() == SyntheticSpec(num_train=6, num_val=3, seed=7).key()
    assert SMALL.key().startswith(f"v{DATASET_VERSION}-")
    assert SMALL.key() != SyntheticSpec(num_train=6, num_val=3, seed=8).key()
    assert len(SYNTHETIC_CLASSES) == 18 and SYNTHETIC_CLASSES[0] == "red_circle"


def test_builtin_keys_are_pinned():
    """The cache key names every cached dataset and teacher: a refactor must not move it."""
    assert SyntheticSpec().key() == "v1-977d28613e7f"
    assert synthetic.BUILTIN_SPECS["synth_tiny"].key() == "v1-99029bfaa893"


# sha256 of (pixels, annotations) of two images of the default spec, as rendered by
# DATASET_VERSION 1 with Pillow 13.0.0 (PIL rasterises the shapes, so other versions may differ).
_PIXEL_GOLDEN = {
    ("train", 0): ("78cc1c0fe769689c", "5b9a568f350c7826"),
    ("val", 7): ("60515e012617c833", "dba86886b4ff104e"),
}


def test_rendered_pixels_and_boxes_are_pinned():
    import PIL

    if PIL.__version__ != "13.0.0":
        pytest.skip(f"golden recorded with Pillow 13.0.0, running {PIL.__version__}")
    for (split, index), (pixels, boxes) in _PIXEL_GOLDEN.items():
        image, anns = synthetic.render_image(SyntheticSpec(), split, index)
        assert hashlib.sha256(image.tobytes()).hexdigest()[:16] == pixels, (split, index)
        text = json.dumps(anns, sort_keys=True).encode()
        assert hashlib.sha256(text).hexdigest()[:16] == boxes, (split, index)


def test_invalid_spec_is_rejected():
    with pytest.raises(ValueError, match=r"\[synthetic\].*min_objects"):
        SyntheticSpec(min_objects=5, max_objects=2)


def test_render_is_deterministic_across_roots_and_worker_counts(tmp_path, monkeypatch):
    spec = SyntheticSpec(num_train=24, num_val=4, seed=3)
    monkeypatch.setenv("D2KD_RENDER_WORKERS", "1")
    a = render_synthetic(spec, tmp_path / "a")
    monkeypatch.setenv("D2KD_RENDER_WORKERS", "2")
    b = render_synthetic(spec, tmp_path / "b")
    files_a, files_b = _files(a), _files(b)
    assert sorted(files_a) == sorted(files_b)
    assert len([f for f in files_a if f.endswith(".png")]) == 28
    for name in files_a:
        assert files_a[name] == files_b[name], name
    # Rendering again is a no-op that returns the same directory.
    assert render_synthetic(spec, tmp_path / "a") == a


def test_annotations_are_valid(tmp_path):
    directory = render_synthetic(SMALL, tmp_path)
    for split, count in (("train", 6), ("val", 3)):
        coco = json.loads((directory / "annotations" / f"instances_{split}.json").read_text())
        assert [c["id"] for c in coco["categories"]] == list(range(1, 19))
        assert len(coco["images"]) == count
        per_image = {img["id"]: 0 for img in coco["images"]}
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            assert 1 <= ann["category_id"] <= len(SYNTHETIC_CLASSES)
            assert w >= 2 and h >= 2, ann
            assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128, ann
            assert 0 < ann["area"] <= w * h and ann["iscrowd"] == 0
            assert ann["visible"] >= SMALL.min_visible
            per_image[ann["image_id"]] += 1
        assert all(SMALL.min_objects <= n for n in per_image.values()), per_image
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
        assert (directory / split / coco["images"][0]["file_name"]).is_file()
    assert json.loads((directory / "spec.json").read_text())["key"] == SMALL.key()


def test_occlusion_rule_drops_mostly_hidden_objects():
    square = np.ones((20, 20), dtype=bool)
    red, grey = np.array([200.0, 0, 0]), np.array([90.0, 90, 90])
    items = [
        PlacedItem(square, 0, 0, red, category_id=1),  # fully covered below
        PlacedItem(square, 0, 0, grey),
        PlacedItem(square, 30, 0, red, category_id=2),  # 50% covered: kept
        PlacedItem(square[:, :10], 40, 0, grey),
        PlacedItem(square, 0, 30, red, category_id=3),  # 70% covered: dropped
        PlacedItem(square[:, :14], 6, 30, grey),
    ]
    canvas, anns = compose_scene(np.zeros((64, 64, 3), np.float32), items, min_visible=0.4)
    assert [a["category_id"] for a in anns] == [2]
    assert anns[0]["visible"] == pytest.approx(0.5)
    # The box is the full shape's, in output pixels (the canvas is 2x supersampled).
    assert anns[0]["bbox"] == [15.0, 0.0, 10.0, 10.0]
    assert anns[0]["area"] == pytest.approx(100.0)
    assert canvas[5, 45].tolist() == grey.tolist() and canvas[5, 35].tolist() == red.tolist()


def test_builtin_dataset_loads_with_metadata(tmp_path, monkeypatch):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    monkeypatch.setenv("D2KD_CACHE", str(tmp_path))
    dicts = DatasetCatalog.get("synth_tiny_train")
    assert len(dicts) == 16
    assert {"file_name", "height", "width", "image_id", "annotations"} <= set(dicts[0])
    for ann in dicts[0]["annotations"]:
        assert {"bbox", "bbox_mode", "category_id", "iscrowd"} <= set(ann)
        assert 0 <= ann["category_id"] < len(SYNTHETIC_CLASSES)
    meta = MetadataCatalog.get("synth_tiny_train")
    assert meta.thing_classes == SYNTHETIC_CLASSES
    assert len(meta.thing_colors) == len(SYNTHETIC_CLASSES)
    assert meta.evaluator_type == "coco"
    assert meta.d2kd_spec_key == synthetic.BUILTIN_SPECS["synth_tiny"].key()
    assert meta.json_file.startswith(str(tmp_path)) and meta.image_root.startswith(str(tmp_path))


def test_val_split_is_ready_for_coco_evaluator(tmp_path, monkeypatch):
    from detectron2.evaluation import COCOEvaluator

    monkeypatch.setenv("D2KD_CACHE", str(tmp_path))
    json_file = synthetic.ensure_registered_rendered("synth_tiny_val")
    assert json_file.is_file()
    evaluator = COCOEvaluator("synth_tiny_val", output_dir=str(tmp_path / "eval"))
    assert evaluator._metadata.json_file == str(json_file)
    assert len(evaluator._coco_api.getImgIds()) == 8


def test_register_is_lazy_idempotent_and_rejects_other_spec(tmp_path):
    register_synthetic("t_lazy", SMALL, root=tmp_path)
    register_synthetic("t_lazy", SMALL, root=tmp_path)  # same spec: no-op
    d2kd.data.register_builtin()  # safe to call twice
    assert not (tmp_path / "synthetic").exists(), "registering must not render"
    with pytest.raises(ValueError, match=r"\[synthetic\].*'t_lazy_train'"):
        register_synthetic("t_lazy", SyntheticSpec(num_train=6, num_val=3, seed=8), root=tmp_path)


def test_incomplete_dataset_dir_is_replaced(tmp_path):
    final = synthetic.dataset_dir(SMALL, tmp_path)
    final.mkdir(parents=True)
    (final / "junk.txt").write_text("left by a crash")
    directory = render_synthetic(SMALL, tmp_path)
    assert directory == final and (final / "spec.json").is_file()
    assert not (final / "junk.txt").exists()


def _render_after_barrier(barrier, spec, root):
    """Child process body: start rendering at the same moment as the sibling."""
    barrier.wait(timeout=60)
    render_synthetic(spec, root)


def test_concurrent_render_yields_one_complete_dataset(tmp_path):
    spec = SyntheticSpec(num_train=40, num_val=8, seed=11)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_render_after_barrier, args=(barrier, spec, tmp_path)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    entries = sorted(p.name for p in (tmp_path / "synthetic").iterdir())
    assert entries == [spec.key()], "temporary directories must not be left behind"
    final = tmp_path / "synthetic" / spec.key()
    assert (final / "spec.json").is_file()
    assert len(list((final / "train").glob("*.png"))) == 40
    assert len(list((final / "val").glob("*.png"))) == 8


def test_cli_preview_writes_a_grid(tmp_path):
    out = tmp_path / "preview.png"
    synthetic.main(["--dataset", "synth_tiny", "--preview", str(out), "--num", "2"])
    assert out.stat().st_size > 1000


def test_module_cli_runs(tmp_path):
    """``python -m d2kd.data.synthetic`` keeps working now that it is a package."""
    out = tmp_path / "preview.png"
    proc = subprocess.run(
        [sys.executable, "-m", "d2kd.data.synthetic", "--dataset", "synth_tiny"]
        + ["--preview", str(out), "--num", "1", "--render", "--root", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 1000
    assert (tmp_path / "c" / "synthetic" / "v1-99029bfaa893" / "spec.json").is_file()
