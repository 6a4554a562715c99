"""tools/visualize.py writes its pictures (random teachers, tiny configs)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

TINY_FGD = os.path.join(ROOT, "tests", "configs", "tiny_fgd.py")
TINY_IKD = os.path.join(ROOT, "tests", "configs", "tiny_ikd.py")
TINY_PLAIN = os.path.join(ROOT, "tests", "configs", "tiny_plain.py")
PNG = b"\x89PNG\r\n\x1a\n"
# Detectron2's Visualizer (GT boxes) imports OpenCV.
needs_cv2 = pytest.mark.skipif(
    importlib.util.find_spec("cv2") is None, reason="OpenCV not installed"
)


def run_visualize(*args: str, command: str = "fgd", config: str = TINY_FGD):
    """tools/visualize.py COMMAND on a tiny recipe, with extra arguments."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "visualize.py"), command, "--config-file"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [*cmd, config, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )


@needs_cv2
def test_fgd_attention_and_masks_png(tmp_path):
    out = tmp_path / "fgd.png"
    proc = run_visualize("--output", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5000


def test_bad_index_is_named(tmp_path):
    proc = run_visualize("--index", "99", "--output", str(tmp_path / "x.png"))
    assert proc.returncode != 0 and "--index 99" in proc.stderr


def test_adversarial_clean_perturbed_and_difference_png(tmp_path):
    out = tmp_path / "adv.png"
    proc = run_visualize("--output", str(out), command="adversarial", config=TINY_IKD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5000


@needs_cv2
def test_batches_png_of_mapped_training_batches(tmp_path):
    out = tmp_path / "batches.png"
    proc = run_visualize(
        "--num-batches", "2", "--output", str(out), command="batches", config=TINY_PLAIN
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 20000


@needs_cv2
def test_batches_draw_the_loaders_own_images_and_boxes(monkeypatch):
    """The panels are the train loader's first batches (after its 64 px resize and flip), with
    every GT box drawn where the mapped instances put it, named by its class."""
    from detectron2.utils.visualizer import Visualizer

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import visualize

    from d2kd.config import load_config
    from d2kd.data import SYNTHETIC_CLASSES

    labels = []
    original = Visualizer.overlay_instances

    def recording(self, **kwargs):
        labels.append(kwargs["labels"])
        return original(self, **kwargs)

    monkeypatch.setattr(Visualizer, "overlay_instances", recording)
    cfg = load_config(TINY_PLAIN)
    panels = visualize.batch_panels(cfg, num_batches=2, scale=4)
    batches = visualize.mapped_batches(cfg, 2)  # the same seed: the same batches again
    samples = [s for batch in batches for s in batch]
    assert len(panels) == len(samples) == len(labels) == 2 * cfg.dataloader.train.total_batch_size
    metadata = visualize.dataset_metadata("synth_tiny_train")
    for (title, picture), sample, names in zip(panels, samples, labels):
        boxes = sample["instances"].gt_boxes.tensor
        assert names == [SYNTHETIC_CLASSES[c] for c in sample["instances"].gt_classes.tolist()]
        assert os.path.basename(sample["file_name"]) in title
        assert f"64x64, {len(boxes)} boxes" in title and len(boxes) > 0
        plain = visualize.draw_gt(sample["image"], None, "BGR", metadata, scale=4)
        assert picture.shape == plain.shape == (256, 256, 3)
        changed = np.abs(picture.astype(int) - plain.astype(int)).max(axis=2) > 8
        assert changed.mean() < 0.7, "the image itself must stay visible"
        for x0, y0, x1, y1 in (boxes * 4).round().int().clamp(2, 253).tolist():
            # Each side of the box, within 2 px: drawn over along most of its length.
            sides = [
                changed[y0 : y1 + 1, x0 - 2 : x0 + 3].any(axis=1),
                changed[y0 : y1 + 1, x1 - 2 : x1 + 3].any(axis=1),
                changed[y0 - 2 : y0 + 3, x0 : x1 + 1].any(axis=0),
                changed[y1 - 2 : y1 + 3, x0 : x1 + 1].any(axis=0),
            ]
            drawn = np.concatenate(sides).mean()
            assert drawn > 0.8, (title, (x0, y0, x1, y1), drawn)
