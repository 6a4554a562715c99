#!/usr/bin/env python
"""What each KD loss costs: forward and backward time of the pure losses in d2kd/losses.

    python benchmarks/loss_cost.py [--terms mse fgd] [--repeats 7] [--threads 1]
        [--device cpu|cuda] [--no-fgd-reference] [--quick] [--out benchmarks/results/loss_cost.json]

Shapes (COCO): batch 2, FPN P3-P7 of 800x1333 inputs padded to 800x1344 (strides 8..128),
256 channels, 30 GT boxes per image (benchmarks/fgd_loss_speed.py's inputs). Every loss sees the
same student maps (requiring grad) and teacher maps, except the row losses, whose inputs are
fixed-size rows (LSHFM: 240 x 2304 cls-tower patches with 4096 hashes; HEAD: 1024 RoIs x 1024;
DFAD: every anchor's 80 logits and 4 deltas over the maps' P3-P7); the terms run interleaved and the medians of
forward, backward and their sum are reported. Then benchmarks/fgd_loss_speed.py runs (the
vectorised FGD loss against the loop reference) and its result is embedded in the JSON.
``--quick`` uses small maps (256x384, 32 channels) and 2 repeats (CI smoke).
"""

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

# fgd_loss_speed: its inputs and its vectorised-vs-reference comparison.
import fgd_loss_speed  # noqa: E402
from _common import RESULTS_DIR, ROOT, hardware, now_iso, read_json, sync, write_json  # noqa: E402
from render_tables import loss_cost_table  # noqa: E402

BOXES = 30
Inputs = Dict[str, Any]  # student / teacher: level -> (N, C, H, W); boxes; image_sizes; padded_hw


def mse_loss(channels: Dict[str, int]) -> Callable[[Inputs], Any]:
    """Plain feature MSE (d2kd.losses.feature.feature_mse), summed over the levels."""
    from d2kd.losses.feature import feature_mse

    def run(x: Inputs):
        return sum(feature_mse(x["student"][k], x["teacher"][k]) for k in channels)

    return run


def fgd_loss(channels: Dict[str, int]) -> Callable[[Inputs], Any]:
    """FGD (d2kd.losses.fgd.FGDLoss, official RetinaNet weights), all levels, with its GcBlocks."""
    from d2kd.losses.fgd import FGDLoss

    module = FGDLoss(channels, channels)

    def run(x: Inputs):
        module.to(x["device"])
        out = module(x["student"], x["teacher"], x["boxes"], x["image_sizes"], x["padded_hw"])
        return sum(out.values())

    run.module = module  # its parameters' gradients are cleared before each measurement
    return run


def _rows(n: int, dim: int, device: str, seed: int):
    """(student rows requiring grad, teacher rows) of a fixed size, seeded."""
    import torch

    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, dim, generator=g).to(device).requires_grad_(True)
    return s, torch.randn(n, dim, generator=g).to(device)


# LSHFM at COCO scale: 3x3 patches of the 256-ch RetinaNet cls tower (D = 2304) at the locations
# its mask keeps (about 4 per GT box over P3-P7 here: 2 images x 30 boxes x 4), K = 4096 hashes.
LSHFM_ROWS, LSHFM_DIM, LSHFM_HASHES = 240, 2304, 4096
# HEAD at the paper's sampling: 2 images x 512 RoIs, fc6/fc7 of 1024.
HEAD_ROIS, HEAD_DIM = 1024, 1024


def lshfm_loss(mode: str) -> Callable[[Dict[str, int]], Callable[[Inputs], Any]]:
    def build(channels: Dict[str, int]) -> Callable[[Inputs], Any]:
        """LSHFM's MimicLoss (mode, beta 7) on (M, 2304) cls-tower patch rows."""
        from d2kd.losses.mimic import MimicLoss

        module = MimicLoss(LSHFM_DIM, mode=mode, beta=7.0, hash_num=LSHFM_HASHES)
        cache = {}

        def run(x: Inputs):
            if not cache:
                module.to(x["device"])
                cache["rows"] = _rows(LSHFM_ROWS, LSHFM_DIM, x["device"], seed=1)
            return sum(module(*cache["rows"]).values())

        return run

    return build


def head_akd_loss(channels: Dict[str, int]) -> Callable[[Inputs], Any]:
    """HEAD's AKD: MSE of adapted assistant fc6 and fc7 against the teacher's, 1024 RoIs."""
    from d2kd.losses.head import akd_loss

    cache = {}

    def run(x: Inputs):
        if not cache:
            cache["fc6"] = _rows(HEAD_ROIS, HEAD_DIM, x["device"], seed=2)
            cache["fc7"] = _rows(HEAD_ROIS, HEAD_DIM, x["device"], seed=3)
        (s6, t6), (s7, t7) = cache["fc6"], cache["fc7"]
        return akd_loss([s6, s7], [t6, t7])

    return run


def head_ckd_loss(channels: Dict[str, int]) -> Callable[[Inputs], Any]:
    """HEAD's CKD: MSE of adapted cls-tower cells against the teacher's fc7, 1024 RoIs."""
    from d2kd.losses.head import ckd_loss

    cache = {}

    def run(x: Inputs):
        if not cache:
            cache["rows"] = _rows(HEAD_ROIS, HEAD_DIM, x["device"], seed=4)
        return ckd_loss(*cache["rows"])

    return run


def dfad_loss(channels: Dict[str, int]) -> Callable[[Inputs], Any]:
    """DFAD's discrepancy: mean L1 of RetinaNet class logits (80 classes, 9 anchors) and box
    deltas over every anchor of P3-P7, computed here from the FPN maps' sizes."""
    import torch

    from d2kd.losses.discrepancy import dfad_discrepancy

    cache = {}

    def run(x: Inputs):
        if not cache:
            n = next(iter(x["student"].values())).shape[0]
            anchors = sum(9 * f.shape[-2] * f.shape[-1] for f in x["student"].values())
            g = torch.Generator().manual_seed(5)
            cache["s"] = {
                k: torch.randn(n, anchors, d, generator=g).to(x["device"]).requires_grad_(True)
                for k, d in (("cls", 80), ("box", 4))
            }
            cache["t"] = {k: torch.randn_like(v).detach() for k, v in cache["s"].items()}
        return sum(dfad_discrepancy(cache["s"], cache["t"]).values())

    return run


# KD loss -> (module that must exist, builder). A slot whose module is missing is reported as
# "not implemented yet"; later issues replace the None builder with theirs.
LOSSES: Dict[str, tuple] = {
    "mse": ("d2kd.losses.feature", mse_loss),
    "fgd": ("d2kd.losses.fgd", fgd_loss),
    "lshfm_l2": ("d2kd.losses.mimic", lshfm_loss("l2")),
    "lshfm_lsh": ("d2kd.losses.mimic", lshfm_loss("lsh")),
    "lshfm_lshl2": ("d2kd.losses.mimic", lshfm_loss("lshl2")),
    "head_akd": ("d2kd.losses.head", head_akd_loss),
    "head_ckd": ("d2kd.losses.head", head_ckd_loss),
    "dfad": ("d2kd.losses.discrepancy", dfad_loss),
}


def available(name: str) -> Optional[str]:
    """None when the loss can be measured, else why not."""
    module, builder = LOSSES[name]
    try:
        importlib.import_module(module)
    except ImportError:
        return f"{name}: not implemented yet ({module} missing)"
    if builder is None:
        return f"{name}: not implemented yet (no builder in benchmarks/loss_cost.py)"
    return None


def make_inputs(preset: Dict[str, Any], device: str) -> Inputs:
    boxes, _, student, teacher = fgd_loss_speed.make_inputs(
        BOXES, preset["padded_hw"], preset["image_sizes"], preset["channels"], device
    )
    student = {k: v.requires_grad_(True) for k, v in student.items()}
    return dict(
        student=student,
        teacher=teacher,
        boxes=boxes,
        image_sizes=preset["image_sizes"],
        padded_hw=preset["padded_hw"],
        device=device,
    )


def time_losses(
    fns: Dict[str, Callable], x: Inputs, repeats: int, device: str
) -> List[Dict[str, Any]]:
    """Forward and backward times of each loss, interleaved in a rotated order; medians in ms."""

    def once(fn) -> tuple:
        for f in x["student"].values():
            f.grad = None
        if hasattr(fn, "module"):
            fn.module.zero_grad(set_to_none=True)
        sync(device)
        t0 = time.perf_counter()
        loss = fn(x)
        sync(device)
        t1 = time.perf_counter()
        loss.backward()
        sync(device)
        return t1 - t0, time.perf_counter() - t1

    for fn in fns.values():
        once(fn)  # warm-up
    names = list(fns)
    acc: Dict[str, List[tuple]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            acc[n].append(once(fns[n]))
    rows = []
    for n in names:
        fwd, bwd = zip(*acc[n])
        rows.append(
            dict(
                term=n,
                forward_ms=statistics.median(fwd) * 1e3,
                backward_ms=statistics.median(bwd) * 1e3,
                total_ms=statistics.median([a + b for a, b in acc[n]]) * 1e3,
            )
        )
    return rows


def run_fgd_reference(quick: bool, threads: int, device: str, out: Path) -> Dict[str, Any]:
    """benchmarks/fgd_loss_speed.py as its own command line would run it; returns its JSON."""
    argv = ["fgd_loss_speed.py", "--threads", str(threads), "--device", device, "--out", str(out)]
    old = sys.argv
    sys.argv = argv + (["--quick"] if quick else [])
    try:
        fgd_loss_speed.main()
    finally:
        sys.argv = old
    return read_json(out) if out.is_file() else {}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--terms", nargs="+", default=None, help=f"default: {', '.join(LOSSES)}")
    ap.add_argument("--repeats", type=int, default=None, help="default 7 (--quick 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--no-fgd-reference", action="store_true", help="skip fgd_loss_speed.py")
    ap.add_argument("--quick", action="store_true", help="small maps, 2 repeats (CI smoke)")
    ap.add_argument("--out", default=None, help=f"default {RESULTS_DIR / 'loss_cost.json'}")
    args = ap.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("[loss_cost] --device cuda but CUDA is not available")
    unknown = [t for t in args.terms or [] if t not in LOSSES]
    if unknown:
        raise SystemExit(f"[loss_cost] unknown term(s) {unknown}; known: {', '.join(LOSSES)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    default_out = ROOT / "output" / "benchmarks" / "loss_cost_quick.json"
    out = Path(args.out or (default_out if args.quick else RESULTS_DIR / "loss_cost.json"))
    preset = fgd_loss_speed.QUICK if args.quick else fgd_loss_speed.FULL
    repeats = args.repeats or (2 if args.quick else 7)
    skipped = {}
    for name in args.terms or list(LOSSES):
        why = available(name)
        if why:
            print(f"[loss_cost] {why}")
            skipped[name] = why
    names = [n for n in args.terms or list(LOSSES) if n not in skipped]
    if not names:
        print("[loss_cost] nothing to measure")
        return 1
    x = make_inputs(preset, args.device)
    channels = {k: v.shape[1] for k, v in x["student"].items()}
    fns = {n: LOSSES[n][1](channels) for n in names}
    started = now_iso()
    rows = time_losses(fns, x, repeats, args.device)
    result = dict(
        benchmark="loss_cost",
        quick=args.quick,
        started=started,
        finished=now_iso(),
        hardware=hardware(args.device),
        repeats=repeats,
        shapes=dict(
            padded_hw=list(preset["padded_hw"]),
            image_sizes=[list(s) for s in preset["image_sizes"]],
            channels=preset["channels"],
            levels=list(channels),
            strides=fgd_loss_speed.STRIDES,
            boxes_per_image=BOXES,
        ),
        rows=rows,
        not_implemented=skipped,
        fgd_vs_reference=None,
    )
    print("\n" + loss_cost_table(result) + "\n", flush=True)
    if not args.no_fgd_reference:
        ref = run_fgd_reference(
            args.quick, args.threads, args.device, out.with_name("fgd_loss_speed.json")
        )
        result["fgd_vs_reference"] = ref
    path = write_json(result, out)
    print(f"[loss_cost] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
