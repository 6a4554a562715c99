"""Speed of the vectorised FGD loss (d2kd.losses.fgd) against the loop reference.

The reference is tests/losses/fgd_reference.py. Shapes: batch 2, RetinaNet P3-P7 of an 800x1333
input padded to 800x1344 (strides 8..128), C = 256, with 5, 30 and 100 GT boxes per image.
Measures (a) mask construction for all levels and (b) the whole loss, forward + backward, over all
levels. Outputs (losses, masks, student gradients) are checked equal (1e-5 relative) first; then
both sides run interleaved and the medians are reported.

    python benchmarks/fgd_loss_speed.py [--quick] [--threads 1] [--device cpu|cuda] [--out PATH]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "losses"))

from fgd_reference import ReferenceFGDLoss, ref_masks  # noqa: E402

from d2kd.losses.fgd import FGDLoss, fgd_multilevel_masks  # noqa: E402

LEVELS = ["p3", "p4", "p5", "p6", "p7"]
STRIDES = [8, 16, 32, 64, 128]
# image_sizes: the second image is smaller than the padded batch, as in real batches.
FULL = dict(
    padded_hw=(800, 1344),
    image_sizes=[(800, 1333), (736, 1333)],
    channels=256,
    boxes=[5, 30, 100],
    mask_repeats=30,
    loss_repeats=7,
)
QUICK = dict(
    padded_hw=(256, 384),
    image_sizes=[(256, 380), (224, 352)],
    channels=32,
    boxes=[5, 30],
    mask_repeats=3,
    loss_repeats=2,
)


def make_inputs(num_boxes: int, padded_hw, image_sizes, channels: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for h, w in image_sizes:
        xy = torch.rand(num_boxes, 2, generator=g) * torch.tensor([w, h])
        wh = (
            torch.rand(num_boxes, 2, generator=g) ** 2 * torch.tensor([w, h]) / 2
        )  # many small, some large
        b = torch.cat([xy, xy + wh], dim=1)
        b[:, 0::2] = b[:, 0::2].clamp(0, w)
        b[:, 1::2] = b[:, 1::2].clamp(0, h)
        boxes.append(b.to(device))
    feat_hws = [(-(-padded_hw[0] // s), -(-padded_hw[1] // s)) for s in STRIDES]
    n = len(image_sizes)
    student = {
        k: torch.randn(n, channels, *hw, generator=g).to(device) for k, hw in zip(LEVELS, feat_hws)
    }
    teacher = {
        k: torch.randn(n, channels, *hw, generator=g).to(device) for k, hw in zip(LEVELS, feat_hws)
    }
    return boxes, feat_hws, student, teacher


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def timed(fn: Callable[[], None], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def interleaved(fast: Callable[[], None], ref: Callable[[], None], repeats: int, device: str):
    fast(), ref()  # warm-up
    tf, tr = [], []
    for r in range(repeats):
        order = [(fast, tf), (ref, tr)] if r % 2 == 0 else [(ref, tr), (fast, tf)]
        for fn, acc in order:
            acc.append(timed(fn, device))
    return statistics.median(tf), statistics.median(tr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small input, few repeats")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fgd_loss_speed.json"))
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("[fgd_loss_speed] CUDA not available; skipped.")
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = QUICK if args.quick else FULL
    padded_hw, image_sizes = preset["padded_hw"], preset["image_sizes"]
    channels, box_counts = preset["channels"], preset["boxes"]
    mask_repeats = args.repeats or preset["mask_repeats"]
    loss_repeats = args.repeats or preset["loss_repeats"]
    dev = args.device

    rows = []
    for k in box_counts:
        boxes, feat_hws, feats_s, feats_t = make_inputs(k, padded_hw, image_sizes, channels, dev)

        # (a) masks, all levels.
        def masks_fast():
            return fgd_multilevel_masks(boxes, feat_hws, padded_hw)

        def masks_ref():
            return [ref_masks(boxes, hw, padded_hw) for hw in feat_hws]

        mask_err = max(
            rel_err(a, b) for fa, ra in zip(masks_fast(), masks_ref()) for a, b in zip(fa, ra)
        )

        # (b) loss forward + backward, all levels; GcBlocks perturbed so L_global is non-trivial.
        ch = {lv: channels for lv in LEVELS}
        fast = FGDLoss(ch, ch).to(dev)
        with torch.no_grad():
            for m in fast.levels.values():
                for gc in (m.gc_s, m.gc_t):
                    gc.channel_add[-1].weight.normal_(std=0.05)
        ref = ReferenceFGDLoss(fast)
        inputs_s = {lv: f.clone().requires_grad_(True) for lv, f in feats_s.items()}

        def step(model):
            def run():
                for f in inputs_s.values():
                    f.grad = None
                fast.zero_grad(set_to_none=True)
                out = model(inputs_s, feats_t, boxes, image_sizes, padded_hw)
                sum(out.values()).backward()
                return out

            return run

        out_f = step(fast)()
        grads_f = [inputs_s[lv].grad.clone() for lv in LEVELS]
        out_r = step(ref)()
        grads_r = [inputs_s[lv].grad.clone() for lv in LEVELS]
        loss_err = max(rel_err(out_f[key].detach(), out_r[key].detach()) for key in out_r)
        grad_err = max(rel_err(a, b) for a, b in zip(grads_f, grads_r))
        if max(mask_err, loss_err, grad_err) > 1e-5:
            raise SystemExit(
                f"[fgd_loss_speed] outputs differ: masks {mask_err}, loss {loss_err}, "
                f"grad {grad_err}"
            )

        tm_f, tm_r = interleaved(masks_fast, masks_ref, mask_repeats, dev)
        tl_f, tl_r = interleaved(step(fast), step(ref), loss_repeats, dev)
        rows.append(
            dict(
                boxes_per_image=k,
                masks_fast_ms=tm_f * 1e3,
                masks_ref_ms=tm_r * 1e3,
                masks_speedup=tm_r / tm_f,
                loss_fwd_bwd_fast_ms=tl_f * 1e3,
                loss_fwd_bwd_ref_ms=tl_r * 1e3,
                loss_speedup=tl_r / tl_f,
                max_rel_err=dict(masks=mask_err, loss=loss_err, grad_student=grad_err),
            )
        )

    print(
        f"\nFGD loss speed: batch {len(image_sizes)}, input {image_sizes[0]} padded to "
        f"{padded_hw}, P3-P7, "
        f"C={channels}, device {dev}, torch.set_num_threads({args.threads}), "
        f"repeats {mask_repeats}/{loss_repeats} (medians, interleaved)\n"
    )
    print(
        "| boxes/img | masks fast ms | masks loop ms | masks x "
        "| loss f+b fast ms | loss f+b ref ms | loss x |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['boxes_per_image']} | {r['masks_fast_ms']:.3f} | {r['masks_ref_ms']:.3f} | "
            f"{r['masks_speedup']:.1f} | {r['loss_fwd_bwd_fast_ms']:.1f} | "
            f"{r['loss_fwd_bwd_ref_ms']:.1f} | "
            f"{r['loss_speedup']:.2f} |"
        )
    result = dict(
        benchmark="fgd_loss_speed",
        quick=args.quick,
        device=dev,
        threads=args.threads,
        torch=torch.__version__,
        python=platform.python_version(),
        machine=platform.machine(),
        cpu_count=os.cpu_count(),
        padded_hw=list(padded_hw),
        image_sizes=[list(s) for s in image_sizes],
        channels=channels,
        levels=LEVELS,
        strides=STRIDES,
        targets=dict(masks_speedup=10.0, loss_speedup=1.5),
        rows=rows,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
