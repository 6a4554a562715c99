#!/usr/bin/env python
"""Latency of a student vs its teacher(s): onnxruntime and PyTorch eager, interleaved rounds.

Example::

    python tools/benchmark_latency.py \\
        --config-files configs/quickstart/retinanet_R18_baseline.py \\
                       configs/quickstart/retinanet_R18w_teacher.py \\
        --threads 2 --runs 30 --size 512 512 --int8 --out output/latency

Writes OUT/latency.json, OUT/latency.md (with fvcore's GMAC and the FLOP floor beside each
latency) and, when AP values are known, OUT/latency.png. The first config is the student. Random
weights are fine for latency; ``--checkpoints`` / ``--onnx`` take one entry per config (``-`` for
none). See d2kd/export/latency.py for the protocol.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-files", nargs="+", required=True, help="student first, then teachers")
    p.add_argument("--checkpoints", nargs="*", default=[], help="per config; '-' = random")
    p.add_argument("--onnx", nargs="*", default=[], help="per config e2e graph; '-' = export")
    p.add_argument("--labels", nargs="*", default=[], help="default: student teacher ...")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30, help="timed interleaved rounds")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per candidate")
    p.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    p.add_argument("--int8", action="store_true", help="also time static int8 graphs")
    p.add_argument("--no-eager", action="store_true", help="skip PyTorch eager")
    p.add_argument("--cuda", action="store_true", help="onnxruntime CUDA provider if available")
    p.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "legacy"])
    p.add_argument("--ap", nargs="*", default=[], help="label=AP pairs for the plot")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def _per_config(values: List[str], n: int, flag: str) -> List[Optional[str]]:
    if values and len(values) != n:
        raise SystemExit(f"[benchmark] {flag} needs one entry per config ({n}), got {len(values)}")
    return [None if v in ("-", "") else v for v in values] or [None] * n


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.WARNING)
    import d2kd.data  # noqa: F401  (registers the synthetic datasets recipes may name)
    from d2kd.export import ExportError
    from d2kd.export.latency import run_benchmark
    from d2kd.utils.files import DiskFullError

    n = len(args.config_files)
    ap: Dict[str, float] = {}
    for item in args.ap:
        key, _, value = item.partition("=")
        try:
            ap[key] = float(value)
        except ValueError:
            raise SystemExit(f"[benchmark] --ap expects label=value, got {item!r}")
    try:
        result = run_benchmark(
            args.config_files,
            args.out,
            checkpoints=_per_config(args.checkpoints, n, "--checkpoints"),
            onnx_files=_per_config(args.onnx, n, "--onnx"),
            labels=args.labels,
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
            size=args.size,
            int8=args.int8,
            eager=not args.no_eager,
            cuda=args.cuda,
            ap=ap,
            exporter=args.exporter,
            seed=args.seed,
        )
    except (ExportError, DiskFullError) as e:
        print(str(e), file=sys.stderr)
        return 1
    with open(os.path.join(args.out, "latency.md")) as f:
        print(f.read())
    if result.get("plot"):
        print(f"plot: {result['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
