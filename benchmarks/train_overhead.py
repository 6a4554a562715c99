#!/usr/bin/env python
"""What distillation costs per training step: student alone, teacher forward, full KD step.

    python benchmarks/train_overhead.py [--methods mse fgd] [--coco-shapes] [--repeats N]
        [--device cpu|cuda] [--threads T] [--quick] [--out benchmarks/results/train_overhead.json]

For each distillation method (every recipe declaring ``__benchmark__``, benchmarks/_common.py),
measured side by side with interleaved repeats in one run (``d2kd.utils.timing``), on the same
batch and the same (randomly initialised) models:

- student step: the Distiller's student alone, loss + backward + SGD step;
- teacher forward: the teacher's backbone and FPN,
  ``teacher.backbone(teacher.preprocess_image(batch).tensor)`` under no_grad, eval mode: all the
  feature methods need (FGD, MSE, IKD's clean pair); LSHFM and HEAD also run the teacher's head or
  box head on the student's locations or RoIs, which lands in their KD step (so their ratio also
  counts that part of the teacher); 0 for teacher-free recipes;
- KD step: the Distiller's training step (student, teacher, KD terms) + backward + SGD step;
- ratio = KD step / (student step + teacher forward); the target is at most 1.10.

Settings: the synthetic recipes (128 px, batch 8, a batch of the recipe's own loader); with
``--coco-shapes`` also the COCO recipes (one random 800x1333 image with 30 boxes per step, models
built without weights); ``--quick`` uses the tiny test recipes and 2 repeats (CI smoke).

Peak memory is measured in a subprocess per setting, so nothing of the timing run pollutes it: on
CPU the peak RSS of a step above the RSS held before it (the kernel's high-water mark, reset per
mode through /proc/self/clear_refs; one subprocess per mode and getrusage where that is refused);
on GPU ``torch.cuda.max_memory_allocated`` above the memory allocated before the step. SGD runs at
learning rate 0, so the weights never drift and every repeat times the same model.
"""

import argparse
import ctypes
import gc
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    METHODS,
    RESULTS_DIR,
    ROOT,
    now_iso,
    select_methods,
    train_overhead_table,
)

from d2kd.config import load_config  # noqa: E402
from d2kd.utils.files import write_json  # noqa: E402
from d2kd.utils.hardware import hardware  # noqa: E402
from d2kd.utils.timing import summarize, time_interleaved  # noqa: E402

MODES = ("teacher", "student", "kd")
TARGET_RATIO = 1.10
COCO_HW, COCO_BOXES = (800, 1333), 30
WORKER_TAG = "D2KD_MEM "
DEFAULT_OUT = RESULTS_DIR / "train_overhead.json"


def coco_batch(n: int = 1, hw=COCO_HW, boxes: int = COCO_BOXES, classes: int = 80, seed: int = 0):
    """``n`` random COCO-sized training inputs (uint8 BGR image, ``boxes`` GT boxes each)."""
    import torch
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    h, w = hw
    batch = []
    for _ in range(n):
        size = torch.tensor([w, h], dtype=torch.float32)
        xy = torch.rand(boxes, 2, generator=g) * size * 0.8
        wh = 8 + torch.rand(boxes, 2, generator=g) ** 2 * size * 0.4  # many small, a few large
        b = torch.cat([xy, torch.minimum(xy + wh, size)], dim=1)
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(b)
        inst.gt_classes = torch.randint(classes, (boxes,), generator=g)
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        batch.append(dict(image=image, instances=inst, height=h, width=w))
    return batch


def build(spec: Dict[str, Any]):
    """The Distiller (random weights, teacher not loaded), a batch and optimizers for a setting.

    Returns:
        (distiller, batch, description of the input)
    """
    import torch
    from detectron2.config import LazyCall as L
    from detectron2.config import instantiate
    from detectron2.utils.registry import locate

    import d2kd.data  # noqa: F401  (registers the synthetic datasets)
    from d2kd.distill import Distiller

    cfg = load_config(str(ROOT / spec["recipe"]), owner="train_overhead")
    if spec.get("coco_terms"):
        term = locate(spec["coco_terms"])
        cfg.model.terms = {spec["method"]: L(term)(levels=["p3", "p4", "p5", "p6", "p7"])}
        cfg.model.weights = {spec["method"]: 1.0}
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    if not isinstance(model, Distiller):
        raise TypeError(f"[train_overhead] {spec['recipe']} builds no Distiller")
    model.to(spec["device"])
    if spec["kind"] == "coco":
        batch = coco_batch()
    else:
        batch = next(iter(instantiate(cfg.dataloader.train)))
    h, w = batch[0]["image"].shape[-2:]
    return model, batch, f"{len(batch)} x {h}x{w}"


def step_fns(model, batch) -> Dict[str, Callable[[], None]]:
    """The three measured steps on one Distiller and one batch."""
    import torch

    student, teacher = model.student, model.teacher_model

    def sgd(params):
        return torch.optim.SGD([p for p in params if p.requires_grad], lr=0.0, momentum=0.9)

    opt_s, opt_kd = sgd(student.parameters()), sgd(model.parameters())

    def student_step() -> None:
        model.train()
        loss = sum(student(batch).values())
        loss.backward()
        opt_s.step()
        opt_s.zero_grad(set_to_none=True)

    def teacher_forward() -> None:
        if teacher is None:  # teacher-free recipes (HEAD's assist row, TF-HEAD): nothing to run
            return
        with torch.no_grad():
            teacher.backbone(teacher.preprocess_image(batch).tensor)

    def kd_step() -> None:
        model.train()
        loss = sum(model(batch).values())
        loss.backward()
        opt_kd.step()
        opt_kd.zero_grad(set_to_none=True)

    return dict(teacher=teacher_forward, student=student_step, kd=kd_step)


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def can_reset_peak_rss() -> bool:
    """Whether this kernel lets a process reset its RSS high-water mark (VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _rss_kb("VmHWM")
        return True
    except OSError:
        return False


def measure_memory(spec: Dict[str, Any], modes: List[str]) -> Dict[str, float]:
    """MB each mode's step needs above what is held before it (run in a fresh process)."""
    import torch
    from detectron2.utils.events import EventStorage

    model, batch, _ = build(spec)
    fns = step_fns(model, batch)
    cuda = str(spec["device"]).startswith("cuda")
    reset = not cuda and can_reset_peak_rss()
    out: Dict[str, float] = {}
    with EventStorage(0):
        for mode in modes:
            fns[mode]()  # warm-up: optimizer state and caches exist before measuring
            gc.collect()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            else:
                try:
                    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back to the OS
                except OSError:
                    pass
                base = _rss_kb("VmRSS") * 1024
                if reset:
                    Path("/proc/self/clear_refs").write_text("5")
            for _ in range(2):
                fns[mode]()
            if cuda:
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated()
            elif reset:
                peak = _rss_kb("VmHWM") * 1024
            else:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            out[mode] = max(0, peak - base) / 2**20
    return out


def memory_in_subprocess(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Peak step memory per mode, from one fresh process per setting (per mode without reset)."""
    cuda = str(spec["device"]).startswith("cuda")
    groups = [list(MODES)] if cuda or can_reset_peak_rss() else [[m] for m in MODES]
    mem: Dict[str, Any] = {}
    for modes in groups:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--_worker",
            json.dumps(dict(spec, modes=modes)),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        lines = [x for x in proc.stdout.splitlines() if x.startswith(WORKER_TAG)]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(
                f"[train_overhead] memory worker failed for {spec['method']} ({spec['kind']}):\n"
                + (proc.stdout + proc.stderr)[-3000:]
            )
        mem.update(json.loads(lines[-1].removeprefix(WORKER_TAG)))
    return mem


def why_not_measured(recipe: str) -> Optional[str]:
    """None when one Distiller step of the recipe is its training step, else why not."""
    from d2kd.distill import Distiller

    cfg = load_config(str(ROOT / recipe), owner="train_overhead")
    if cfg.model.get("_target_") is not Distiller:
        return "a plain detector, nothing to distil"
    if cfg.train.get("trainer", None) is not None or cfg.train.get("hooks", None):
        # DFAD's generator steps, IKD's adversarial window: a Distiller step outside the loop
        # is not its step.
        return "its recipe runs its own loop (train.trainer or train.hooks); see its README"
    return None


def settings(args) -> List[Dict[str, Any]]:
    """(method, kind, recipe, label) to measure, skipping what one step cannot show."""
    out = []
    for name in select_methods(args.methods, "train_overhead"):
        m = METHODS[name]
        why = why_not_measured(m.recipe)
        if why:
            print(f"[train_overhead] {name}: {why}")
            continue
        base = dict(method=name, device=args.device, threads=args.threads)
        if args.quick:
            if m.smoke:
                out.append(dict(base, kind="quick", recipe=m.smoke, label="tiny test recipe"))
        else:
            out.append(dict(base, kind="synthetic", recipe=m.recipe, label="synthetic 128 px"))
        if args.coco_shapes:
            for label, recipe in m.coco:
                out.append(
                    dict(base, kind="coco", recipe=recipe, label=label, coco_terms=m.coco_terms)
                )
    return out


def measure(spec: Dict[str, Any], repeats: int, memory: bool) -> Dict[str, Any]:
    """Interleaved timings (and optionally memory) of one setting."""
    from detectron2.utils.events import EventStorage

    model, batch, shape = build(spec)
    fns = step_fns(model, batch)
    with EventStorage(0):
        times = time_interleaved(fns, repeats, warmup=1, device=spec["device"])
    del model, batch, fns
    gc.collect()
    med = {m: summarize(times[m]) for m in MODES}
    prefix = "COCO shapes, " if spec["kind"] == "coco" else ""
    row = dict(
        method=spec["method"],
        kind=spec["kind"],
        recipe=spec["recipe"],
        setting=f"{prefix}{spec['label']}, {shape}",
        batch=shape,
        student_s=med["student"]["p50_ms"] / 1e3,
        teacher_s=med["teacher"]["p50_ms"] / 1e3,
        kd_s=med["kd"]["p50_ms"] / 1e3,
        timings=med,
    )
    row["ratio"] = row["kd_s"] / (row["student_s"] + row["teacher_s"])
    row["memory"] = memory_in_subprocess(spec) if memory else None
    return row


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=None, help="default: every KD method")
    ap.add_argument("--coco-shapes", action="store_true", help="also the COCO recipes, 800x1333")
    ap.add_argument("--repeats", type=int, default=None, help="default 10 (COCO 3, --quick 2)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--quick", action="store_true", help="tiny recipes, 2 repeats (CI smoke)")
    ap.add_argument("--out", default=None, help=f"default {RESULTS_DIR}/train_overhead.json")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch

    if args._worker:
        spec = json.loads(args._worker)
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        print(WORKER_TAG + json.dumps(measure_memory(spec, spec["modes"])), flush=True)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("[train_overhead] --device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        torch.set_flush_denormal(True)  # as tools/train_net.py does on CPU
    rows, started = [], now_iso()
    for spec in settings(args):
        repeats = args.repeats or (2 if args.quick else 3 if spec["kind"] == "coco" else 10)
        what = f"{spec['method']}: {spec['kind']} ({spec['recipe']}), {repeats} repeats"
        print(f"[train_overhead] {what}", flush=True)
        rows.append(dict(measure(spec, repeats, not args.no_memory), repeats=repeats))
    if not rows:
        print("[train_overhead] nothing to measure")
        return 1
    cuda = args.device == "cuda"
    result = dict(
        benchmark="train_overhead",
        quick=args.quick,
        started=started,
        finished=now_iso(),
        hardware=hardware(args.device),
        repeats=sorted({r["repeats"] for r in rows}),
        target_ratio=TARGET_RATIO,
        memory_method=(
            None
            if args.no_memory
            else (
                "CUDA max_memory_allocated above allocated before the step"
                if cuda
                else "peak RSS of the step above RSS before it, one process per setting"
            )
        ),
        rows=rows,
    )
    result["repeats"] = "/".join(str(r) for r in result["repeats"])
    print("\n" + train_overhead_table(result) + "\n")
    over = [r for r in rows if r["ratio"] > TARGET_RATIO]
    for r in over:
        print(
            f"[train_overhead] {r['method']} ({r['kind']}): ratio {r['ratio']:.2f} > {TARGET_RATIO}"
        )
    quick_out = ROOT / "output" / "benchmarks" / "train_overhead_quick.json"
    path = write_json(result, args.out or (quick_out if args.quick else DEFAULT_OUT))
    print(f"[train_overhead] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
