#!/usr/bin/env python
"""What each KD loss costs: forward and backward time of every term's pure loss.

    python benchmarks/loss_cost.py [--terms mse fgd] [--repeats 7] [--threads 1]
        [--device cpu|cuda] [--quick] [--out benchmarks/results/loss_cost.json]

The terms are found, not listed: every :class:`d2kd.distill.term.KDTerm` subclass in the modules
of :mod:`d2kd.distill.terms` that implements :meth:`~d2kd.distill.term.KDTerm.cost_probes` gives
one row per probe; a term without a probe is named and skipped. Rows follow the benchmarks'
method order (benchmarks/_common.py); a probe named after no method sits after its family's
rows (head_ckd after the head_* methods), or last.

Shapes (COCO, :data:`d2kd.distill.term.COCO_SHAPES`): batch 2, FPN P3-P7 of 800x1333 inputs
padded to 800x1344 (strides 8..128), 256 channels, 30 GT boxes per image. Every probe sees the same
student maps (requiring grad) and teacher maps; the row losses add fixed-size rows of their own
(LSHFM: 240 x 2304 cls-tower patches with 4096 hashes; DFAD: every anchor's 80 logits and 4
deltas over the maps' P3-P7). The probes run interleaved in seeded random order, and the medians
of forward, backward and their sum are reported. ``--quick`` uses small maps (256x384, 32
channels) and 2 repeats (CI smoke).
"""

import argparse
import importlib
import inspect
import pkgutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import METHODS, RESULTS_DIR, ROOT, loss_cost_table, now_iso  # noqa: E402

from d2kd.utils.files import write_json  # noqa: E402
from d2kd.utils.hardware import hardware  # noqa: E402
from d2kd.utils.timing import synchronize, time_interleaved  # noqa: E402


def term_classes() -> List[type]:
    """Every KD term class defined in a module of d2kd.distill.terms, in module order."""
    import d2kd.distill.terms as package
    from d2kd.distill.term import KDTerm

    found = []
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, KDTerm) and cls.__module__ == module.__name__:
                found.append(cls)
    return found


def discover_probes(inputs) -> Tuple[Dict[str, Callable[[], Any]], List[str]]:
    """(probe name -> closure, in table order; names of the term classes without a probe).

    A class provides probes when it defines ``cost_probes`` itself, so a probe a base class
    provides (LSHFM's, for both of its terms) is counted once.
    """
    from d2kd.distill.term import KDTerm

    probes: Dict[str, Callable[[], Any]] = {}
    without = []
    for cls in term_classes():
        if "cost_probes" not in vars(cls):
            if cls.cost_probes.__func__ is KDTerm.cost_probes.__func__:
                without.append(cls.__name__)
            continue  # else its base class's probe, counted there
        for name, probe in cls.cost_probes(inputs).items():
            if name in probes:
                raise ValueError(f"[loss_cost] two terms name a probe '{name}' ({cls.__name__})")
            probes[name] = probe
    rank = {name: i for i, name in enumerate(METHODS)}

    def place(n: str) -> float:
        """A method's row; a probe named after none sits with its family (head_ckd by head_*)."""
        if n in rank:
            return rank[n]
        family = [i for m, i in rank.items() if m.split("_")[0] == n.split("_")[0]]
        return max(family) + 0.5 if family else len(rank)

    ordered = sorted(probes, key=lambda n: (place(n), list(probes).index(n)))
    return {n: probes[n] for n in ordered}, without


def time_probes(
    probes: Dict[str, Callable[[], Any]], repeats: int, device: str
) -> List[Dict[str, Any]]:
    """Forward and backward times of each probe, interleaved; medians in ms.

    :func:`d2kd.utils.timing.time_interleaved` times forward + backward as one call; the forward
    part of each call is recorded inside it, so both come from the same calls.
    """
    forward: Dict[str, List[float]] = {n: [] for n in probes}

    def step(name: str) -> Callable[[], None]:
        def run() -> None:
            synchronize(device)
            t0 = time.perf_counter()
            loss = probes[name]()
            synchronize(device)
            forward[name].append(time.perf_counter() - t0)
            loss.backward()

        return run

    totals = time_interleaved({n: step(n) for n in probes}, repeats, warmup=1, device=device)
    rows = []
    for name in probes:
        fwd = forward[name][-repeats:]  # the warm-up call comes first
        total = list(totals[name])
        rows.append(
            dict(
                term=name,
                forward_ms=statistics.median(fwd) * 1e3,
                backward_ms=statistics.median([t - f for t, f in zip(total, fwd)]) * 1e3,
                total_ms=statistics.median(total) * 1e3,
            )
        )
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--terms", nargs="+", default=None, help="probe names (default: all)")
    ap.add_argument("--repeats", type=int, default=None, help="default 7 (--quick 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="small maps, 2 repeats (CI smoke)")
    ap.add_argument("--out", default=None, help=f"default {RESULTS_DIR / 'loss_cost.json'}")
    args = ap.parse_args(argv)
    import torch

    from d2kd.distill.probes import COCO_SHAPES, QUICK_SHAPES, ProbeInputs

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("[loss_cost] --device cuda but CUDA is not available")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    default_out = ROOT / "output" / "benchmarks" / "loss_cost_quick.json"
    out = Path(args.out or (default_out if args.quick else RESULTS_DIR / "loss_cost.json"))
    shapes = QUICK_SHAPES if args.quick else COCO_SHAPES
    repeats = args.repeats or (2 if args.quick else 7)
    inputs = ProbeInputs.synthetic(shapes, args.device)
    probes, without = discover_probes(inputs)
    for name in without:
        print(f"[loss_cost] {name}: no cost probe (KDTerm.cost_probes), skipped")
    unknown = [t for t in args.terms or [] if t not in probes]
    if unknown:
        raise SystemExit(f"[loss_cost] unknown term(s) {unknown}; known: {', '.join(probes)}")
    if args.terms:
        probes = {n: p for n, p in probes.items() if n in args.terms}
    if not probes:
        print("[loss_cost] nothing to measure")
        return 1
    started = now_iso()
    rows = time_probes(probes, repeats, args.device)
    result = dict(
        benchmark="loss_cost",
        quick=args.quick,
        started=started,
        finished=now_iso(),
        hardware=hardware(args.device),
        repeats=repeats,
        shapes=dict(
            padded_hw=list(shapes.padded_hw),
            image_sizes=[list(s) for s in shapes.image_sizes],
            channels=shapes.channels,
            levels=list(shapes.levels),
            strides=list(shapes.strides),
            boxes_per_image=shapes.boxes_per_image,
        ),
        rows=rows,
        no_probe=without,
    )
    print("\n" + loss_cost_table(result) + "\n", flush=True)
    path = write_json(result, out)
    print(f"[loss_cost] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
