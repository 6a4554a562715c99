#!/usr/bin/env python
"""Every COCO and VOC recipe takes two real training steps and one evaluation at its real size.

    python benchmarks/coco_scale_check.py                      # every recipe, one after another
    python benchmarks/coco_scale_check.py --recipes configs/head/retinanet_R18_tf_head_coco_1x.py
    python benchmarks/coco_scale_check.py --size 128 --recipes ...  # CI smoke: tiny inputs

No COCO, VOC or pretrained weights are needed. A tiny dataset is rendered into a temporary
``$DETECTRON2_DATASETS`` in the layout Detectron2's builtin registrations read (``coco/``,
``VOC2007/``, ``VOC2012/``: COCO json with all 80 categories, VOC xml with its 20 classes; 4
training and 2 test images of COCO's 800x1333 input, or VOC's 375x500 before the recipes'
upscaling), so each recipe runs with its own dataset names, mappers, evaluator and resolution.
Weights are random, with frozen BatchNorms calibrated on noise (:func:`random_weights`): the
student's backbone stands in for ``train.init_checkpoint``'s ImageNet weights, the teacher is
the recipe's own teacher model (its quick check off). Each recipe runs through
``tools/train_net.py`` in a child process for 2 iterations at batch 2 on the CPU, then
evaluates; IKD's offline recipe first makes its adversarial copies with
``tools/gen_adversarial.py``. Recorded per recipe: status (the error line of a failure), wall
time, s/iteration (Detectron2's ``time`` in metrics.json, the mean of the 2 steps) and the
child's peak resident memory. ``--size`` other than 800 scales images and resizes (CI smoke).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, ROOT, coco_scale_table, now_iso, portable_path  # noqa: E402

from d2kd.utils.files import read_json, write_json  # noqa: E402
from d2kd.utils.hardware import hardware  # noqa: E402
from d2kd.utils.runs import PROGRESS_FILE, Job, RunFailed, run_job, train_net_cmd  # noqa: E402

REAL_SIZE = 800  # COCO recipes' shorter side at test time
COCO_HW, VOC_HW = (800, 1333), (375, 500)  # what the images are rendered at, for size 800
BATCH = 2
ITERS = 2
VOC_OBJECT = (
    "<object><name>{}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0"
    "</difficult><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox>"
    "</object>"
)
# How a run killed for memory ends its log (besides exit -9 when the kernel killed it).
OOM_MARKS = ("can't allocate memory", "MemoryError", "is killed by signal: Killed")
ERROR = re.compile(r"^([\w.]+(Error|Exception|Exit)|KeyboardInterrupt)\b")


def recipes() -> List[str]:
    """Every COCO and VOC recipe, repo-relative (not configs/common/ nor helpers named "_*")."""
    found = {p for pat in ("*coco*.py", "*voc*.py") for p in (ROOT / "configs").glob(f"*/{pat}")}
    keep = [p for p in found if p.parent.name != "common" and not p.name.startswith("_")]
    return sorted(p.relative_to(ROOT).as_posix() for p in keep)


# ------------------------------------------------------------------------------------------- data
def render(rng, hw, labels) -> tuple:
    """A noisy gradient with 2-6 filled polygons (boxes, triangles, ellipses) of random classes.

    Returns:
        (PIL image, [(label, polygon [x0, y0, x1, y1, ...], box [x0, y0, x1, y1])]).
    """
    import numpy as np
    from PIL import Image, ImageDraw

    h, w = hw
    ramp = np.linspace(0, 1, w)[None, :, None] * rng.uniform(-60, 60, 3)
    img = rng.uniform(60, 190, 3) + ramp + rng.normal(0, 12, (h, w, 3))
    pil = Image.fromarray(img.clip(0, 255).astype("uint8"))
    draw, objects = ImageDraw.Draw(pil), []
    for _ in range(rng.integers(2, 7)):
        size = float(np.exp(rng.uniform(np.log(0.04), np.log(0.5))) * min(h, w))
        sx, sy = size * rng.uniform(0.6, 1.4, 2) / 2
        cx, cy = rng.uniform(sx, w - sx), rng.uniform(sy, h - sy)
        n = int(rng.choice([3, 4, 24]))
        angle = np.arange(n) * 2 * np.pi / n + (np.pi / 4 if n == 4 else 0)
        xs, ys = cx + sx * np.cos(angle), cy + sy * np.sin(angle)
        poly = [round(float(v), 1) for xy in zip(xs, ys) for v in xy]
        draw.polygon(poly, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        box = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
        objects.append((labels[int(rng.integers(len(labels)))], poly, box))
    return pil, objects


def build_datasets(root: Path, size: int = REAL_SIZE, n_train: int = 4, n_test: int = 2) -> None:
    """Render COCO 2017 train/val and VOC 2007 trainval/test + 2012 trainval under ``root``
    (a ``$DETECTRON2_DATASETS``), deterministic."""
    import numpy as np
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
    from detectron2.data.datasets.pascal_voc import CLASS_NAMES

    rng = np.random.default_rng(0)
    coco_hw, voc_hw = [tuple(round(v * size / REAL_SIZE) for v in hw) for hw in (COCO_HW, VOC_HW)]
    categories = [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES if c["isthing"]]
    for split, n in (("train2017", n_train), ("val2017", n_test)):
        images, annotations = [], []
        (root / "coco" / split).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            pil, objects = render(rng, coco_hw, [c["id"] for c in categories])
            pil.save(root / "coco" / split / f"{i:012d}.jpg", quality=90)
            images.append(
                dict(id=i, file_name=f"{i:012d}.jpg", height=coco_hw[0], width=coco_hw[1])
            )
            for cat, poly, (x0, y0, x1, y1) in objects:
                box = [x0, y0, x1 - x0, y1 - y0]
                annotations.append(
                    dict(id=len(annotations) + 1, image_id=i, category_id=cat, bbox=box,
                         area=box[2] * box[3], iscrowd=0, segmentation=[poly])  # fmt: skip
                )
        data = dict(images=images, annotations=annotations, categories=categories)
        write_json(data, root / "coco" / "annotations" / f"instances_{split}.json")
    half = n_train // 2
    for year, split, n in (
        ("VOC2007", "trainval", half),
        ("VOC2012", "trainval", n_train - half),
        ("VOC2007", "test", n_test),
    ):
        ids = [f"{split}_{i:06d}" for i in range(n)]
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (root / year / sub).mkdir(parents=True, exist_ok=True)
        (root / year / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for fid in ids:
            pil, objects = render(rng, voc_hw, list(CLASS_NAMES))
            pil.save(root / year / "JPEGImages" / f"{fid}.jpg", quality=90)
            # VOC boxes are 1-based inclusive pixel indices: x0 + 1, y0 + 1, x1, y1.
            boxes = [(name, *(max(1, round(v) + (i < 2)) for i, v in enumerate(box)))
                     for name, _, box in objects]  # fmt: skip
            xml = "".join(VOC_OBJECT.format(*b) for b in boxes)
            (root / year / "Annotations" / f"{fid}.xml").write_text(
                f"<annotation><filename>{fid}.jpg</filename><size><height>{voc_hw[0]}</height>"
                f"<width>{voc_hw[1]}</width><depth>3</depth></size>{xml}</annotation>\n"
            )


# ---------------------------------------------------------------------------------------- recipes
def random_weights(node, folder: Path, prefix: str = "") -> Path:
    """A checkpoint of model ``node`` with random weights, cached in ``folder`` per node.

    Each frozen BatchNorm gets the statistics of its input in one forward pass of noise images
    through the backbone, as a pretrained backbone's would have: with the identity statistics of
    a fresh FrozenBatchNorm2d the activations grow with every residual block (R101's losses
    reached 1e5 and it diverged in its second step). ``prefix`` keeps only those keys (the
    student's ``backbone.bottom_up.``: what the ImageNet checkpoint it replaces holds).
    """
    import torch
    from detectron2.config import instantiate
    from detectron2.layers import FrozenBatchNorm2d

    key = hashlib.sha256(repr(node).encode()).hexdigest()[:12]
    path = folder / f"{key}{'-' + prefix.strip('.') if prefix else ''}.pth"
    if path.is_file():
        return path

    def calibrate(bn, inputs):
        bn.running_mean.copy_(inputs[0].mean((0, 2, 3)))
        bn.running_var.copy_(inputs[0].var((0, 2, 3)))

    torch.manual_seed(0)
    model = instantiate(node).eval()
    bns = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    hooks = [m.register_forward_pre_hook(calibrate) for m in bns]
    with torch.no_grad():  # uniform pixels, normalised as the model normalises its images
        model.backbone((torch.rand(2, 3, 256, 256) * 255 - model.pixel_mean) / model.pixel_std)
    for h in hooks:
        h.remove()
    state = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    torch.save({"model": state}, path)
    return path


def _resizes(cfg) -> List[tuple]:
    """(override prefix, node) of each ResizeShortestEdge first in a train/test mapper."""
    from detectron2.data.transforms import ResizeShortestEdge

    out = []
    for part in ("train", "test"):
        augs = cfg.dataloader[part].get("mapper", {}).get("augmentations") or []
        if augs and augs[0].get("_target_") is ResizeShortestEdge:
            out.append((f"dataloader.{part}.mapper.augmentations.0", augs[0]))
    return out


def describe_input(cfg) -> str:
    """The recipe's input size: its training resize (or generated size), then its test resize."""
    from omegaconf import OmegaConf

    parts = []
    gen = OmegaConf.select(cfg, "train.hooks.0.generator.img_size", default=None)
    if gen:
        parts.append(f"{gen}² generated")
    for _, node in _resizes(cfg):
        edge = node.short_edge_length
        edge = [edge] if isinstance(edge, int) else list(edge)
        short = f"{min(edge)}–{max(edge)}" if min(edge) != max(edge) else str(edge[0])
        parts.append(f"{short} ≤{node.max_size}")
    return " / ".join(parts)


def size_overrides(cfg, size: int) -> List[str]:
    """Overrides scaling every resize (and DFAD's generated images) to ``size`` (the CI smoke)."""
    from omegaconf import OmegaConf

    if size == REAL_SIZE:
        return []
    out = []
    for prefix, node in _resizes(cfg):
        out.append(f"{prefix}.short_edge_length=[{size},{size}]")
        out.append(f"{prefix}.max_size={round(node.max_size * size / REAL_SIZE)}")
    if OmegaConf.select(cfg, "train.hooks.0.generator.img_size", default=None):
        side = max(32, round(size * 512 / REAL_SIZE / 32) * 32)  # the generator's multiple
        out.append(f"train.hooks.0.generator.img_size={side}")
    return out


def overrides(cfg, run_dir: Path, weights: Path, batch: int) -> List[str]:
    """train_net overrides: 2 CPU steps at ``batch``, random weights (cached in ``weights``)."""
    from omegaconf import OmegaConf

    out = [f"train.output_dir={run_dir}", "train.device=cpu", f"train.max_iter={ITERS}"]
    out.append(f"dataloader.train.total_batch_size={batch}")
    student = cfg.model.student if "student" in cfg.model else cfg.model
    out.append(f"train.init_checkpoint={random_weights(student, weights, 'backbone.bottom_up.')}")
    if OmegaConf.select(cfg, "model.teacher.model", default=None) is not None:
        out.append(f"model.teacher.weights={random_weights(cfg.model.teacher.model, weights)}")
        out.append("train.teacher_check.num_images=0")
    if OmegaConf.select(cfg, "dataloader.train.mapper.adv_dir", default=None):
        out.append("dataloader.train.mapper.expected_settings.steps=1")  # see check()
    return out


def first_error(log: Path) -> str:
    """The exception line that ended a failed run (the last one, after any chained causes)."""
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    found = [ln.strip() for ln in lines if ERROR.match(ln)]
    line = (found or [ln for ln in lines if ln.strip()] or ["no output"])[-1][:300]
    line = re.sub(r"\S*/d2kd-coco-scale-[^/\s]+/", "<tmp>/", line)  # no machine paths
    return line.replace(f"{ROOT}/", "")


def step_time(run_dir: Path) -> Optional[float]:
    """Detectron2's smoothed ``time`` (s/iteration) at the last logged iteration."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    times = [r["time"] for r in map(json.loads, path.read_text().splitlines()) if "time" in r]
    return round(times[-1], 2) if times else None


def timing_note(loads: List[float]) -> str:
    """How loaded the machine was (the 1-minute load average when each run started)."""
    if not loads or max(loads) < 0.5:
        return "timed on an otherwise idle machine."
    return (
        f"timed under load: other jobs shared the CPU (1-minute load average {min(loads):.1f}–"
        f"{max(loads):.1f} when the runs started); rerun on a quiet machine for clean timings."
    )


def run(job: Job, row: Dict[str, Any]) -> Optional[float]:
    """Run one job; add its wall time to ``row``, and on failure its error line and ``oom``
    (killed by the kernel, or an allocation failed). Returns its peak memory (MiB) if it
    succeeded, else None."""
    try:
        tally = run_job(job)
    except RunFailed:
        tally = read_json(job.run_dir / PROGRESS_FILE)
        log = (job.run_dir / job.log_name).read_text(errors="replace")[-20000:]
        oom = tally["status"] == "exit -9" or any(m in log for m in OOM_MARKS)
        row.update(error=first_error(job.run_dir / job.log_name), oom=oom)
    row["wall_s"] = round(row["wall_s"] + tally["wall_s"], 1)
    row["peak_rss_mb"] = max(row["peak_rss_mb"] or 0, tally.get("peak_rss_mb") or 0) or None
    return None if row["error"] else row["peak_rss_mb"]


def check(recipe: str, out: Path, data: Path, weights: Path, size: int, threads: int) -> dict:
    """Run one recipe (after its prepare step, if any) in a fresh folder; return its row.

    A run that runs out of memory at batch 2 is run again at batch 1, and the row says so.
    """
    from omegaconf import OmegaConf

    from d2kd.config import apply_overrides, load_config

    cfg = load_config(str(ROOT / recipe), owner="coco_scale")
    scaled = size_overrides(cfg, size)
    cfg = apply_overrides(cfg, scaled, owner="coco_scale")
    base = out / Path(recipe).with_suffix("").relative_to("configs")
    shutil.rmtree(base, ignore_errors=True)
    env = dict(DETECTRON2_DATASETS=str(data))
    row = dict(recipe=recipe, input=describe_input(cfg), batch=BATCH, notes=[], status="failed")
    row.update(recipe_batch=cfg.dataloader.train.get("total_batch_size"), error=None)
    row.update(wall_s=0.0, peak_rss_mb=None, load_avg_1m=round(os.getloadavg()[0], 2))
    prepared = True
    if OmegaConf.select(cfg, "dataloader.train.mapper.adv_dir", default=None):
        # IKD offline: adversarial copies of the training set, 1 attack step instead of 5 (the
        # same computation repeated; the trainer is told through expected_settings.steps).
        gen = [sys.executable, str(ROOT / "tools" / "gen_adversarial.py"), "--config-file"]
        gen += [str(ROOT / recipe), "--steps", "1", "--device", "cpu", *scaled]
        gen.append(f"model.teacher.weights={random_weights(cfg.model.teacher.model, weights)}")
        peak = run(Job(gen, base / "prepare", threads=threads, env=env), row)
        prepared = peak is not None
        if prepared:  # the table's peak is the training's; the copies' goes in the note
            row["peak_rss_mb"] = None
            note = f"adversarial copies made first, 1 attack step ({peak / 1024:.1f} GiB peak)"
            row["notes"].append(note)
        else:
            row["notes"].append("making the adversarial copies failed")
    run_dir = base / f"batch{BATCH}"
    for batch in range(BATCH, 0, -1) if prepared else ():
        run_dir, row["batch"] = base / f"batch{batch}", batch
        opts = overrides(cfg, run_dir, weights, batch) + scaled
        job = Job(train_net_cmd(recipe, *opts), run_dir, threads=threads, env=env)
        before = row["peak_rss_mb"]
        if run(job, row) is not None:
            ok = (run_dir / "eval_last.json").is_file()
            row["status"] = "ok" if ok else "failed"
            row["error"] = None if ok else "trained, but wrote no evaluation"
            break
        if batch == 1 or not row.pop("oom"):
            break
        peak = row["peak_rss_mb"] / 1024
        row["notes"].append(f"batch {batch} ran out of memory (peak {peak:.1f} GiB)")
        row.update(error=None, peak_rss_mb=before)
    row.pop("oom", None)
    row.update(s_per_iter=step_time(run_dir), output_dir=portable_path(run_dir))
    for ckpt in base.rglob("*.pth"):  # hundreds of MB each; nothing here needs them
        ckpt.unlink()
    return row


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--recipes", nargs="+", help="repo-relative recipes (default: every one)")
    ap.add_argument("--size", type=int, default=REAL_SIZE, help="shorter side; 800: the real one")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each child")
    ap.add_argument("--out", default=str(ROOT / "output" / "benchmarks" / "coco_scale"))
    ap.add_argument("--no-publish", action="store_true", help="leave benchmarks/results alone")
    args = ap.parse_args(argv)
    known = recipes()
    chosen = [r.replace(os.sep, "/") for r in args.recipes or known]
    unknown = [r for r in chosen if r not in known]
    if unknown:
        ap.error(f"not a COCO/VOC recipe: {unknown}; known: {', '.join(known)}")
    out, hw = Path(args.out), dict(hardware("cpu"), torch_threads=args.threads)
    data = dict(benchmark="coco_scale", created=now_iso(), size=args.size, hardware=hw, rows=[])
    data["iterations"] = ITERS
    # SIGTERM unwinds like Ctrl-C: the running child is stopped and the temporary data removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="d2kd-coco-scale-") as tmp_dir:
        tmp = Path(tmp_dir)
        build_datasets(tmp / "datasets", args.size)
        (tmp / "weights").mkdir()
        for recipe in chosen:
            print(f"[coco_scale] {recipe} ...", flush=True)
            row = check(recipe, out, tmp / "datasets", tmp / "weights", args.size, args.threads)
            error = f": {row['error']}" if row["error"] else ""
            print(f"[coco_scale] {recipe}: {row['status']} in {row['wall_s']} s{error}", flush=True)
            data["rows"].append(row)
            data["finished"] = now_iso()
            data["timing"] = timing_note([r["load_avg_1m"] for r in data["rows"]])
            write_json(data, out / "coco_scale.json")  # after each row: a long run can be stopped
            shown = data
            if args.size == REAL_SIZE and not args.no_publish:
                shown = publish(data, RESULTS_DIR / "coco_scale.json")
    print(coco_scale_table(shown))
    return 0 if all(r["status"] == "ok" for r in data["rows"]) else 1


def publish(data: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """Merge ``data``'s rows into the published JSON (a rerun of some recipes replaces theirs)."""
    old = read_json(path) if path.is_file() else dict(rows=[])
    rows = {r["recipe"]: r for r in old["rows"]}
    rows.update({r["recipe"]: r for r in data["rows"]})
    merged = dict(data, created=old.get("created", data["created"]))
    merged["rows"] = [rows[r] for r in sorted(rows)]
    merged["timing"] = timing_note([r["load_avg_1m"] for r in merged["rows"]])
    write_json(merged, path)
    return merged


if __name__ == "__main__":
    sys.exit(main())
