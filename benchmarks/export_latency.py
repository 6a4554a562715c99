#!/usr/bin/env python
"""What deployment buys: a trained student exported with its int8 graph, then timed.

    python benchmarks/export_latency.py --checkpoint output/benchmarks/accuracy/baseline/seed0/model_final.pth
        [--config-file configs/quickstart/retinanet_R18_baseline.py]
        [--teacher-config configs/quickstart/retinanet_R18w_teacher.py] [--threads 1]
        [--runs 30] [--size 128 128] [--out output/benchmarks/export_latency]

1. ``export_student`` (the code behind tools/export_student.py) with ``int8=True``: the fp32
   graph behind the parity gate, the static int8 graph judged by its ΔAP on synth_val.
2. ``run_benchmark`` (tools/benchmark_latency.py's code) on those graphs and the teacher's
   (random weights: latency does not depend on them): onnxruntime fp32 and int8, PyTorch eager,
   interleaved rounds, paired ratios, GMAC and the FLOP floor.
3. ``benchmarks/results/latency.json``: the latency result plus the export's AP per precision,
   rendered by benchmarks/render_tables.py into the README's "Export and latency" section.
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, ROOT, latency_table, now_iso, portable_path  # noqa: E402

from d2kd.utils.files import write_json  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a trained student (model_final.pth)")
    ap.add_argument("--config-file", default="configs/quickstart/retinanet_R18_baseline.py")
    ap.add_argument("--teacher-config", default="configs/quickstart/retinanet_R18w_teacher.py")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"))
    ap.add_argument("--eval-images", type=int, default=0, help="images for AP; 0: all")
    ap.add_argument("--out", default=str(ROOT / "output" / "benchmarks" / "export_latency"))
    ap.add_argument("--no-publish", action="store_true")
    return ap.parse_args(argv)


def _portable(obj):
    """The result with every path inside the repository or the cache made portable."""
    if isinstance(obj, dict):
        return {k: _portable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_portable(v) for v in obj]
    if (
        isinstance(obj, str)
        and obj.startswith("/")
        and obj.endswith((".onnx", ".pth", ".py", ".png"))
    ):
        return portable_path(obj)
    return obj


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import d2kd.data  # noqa: F401  (registers the synthetic datasets)
    from d2kd.export import export_student
    from d2kd.export.latency import run_benchmark

    out = Path(args.out)
    report = export_student(
        args.config_file, args.checkpoint, str(out / "export"), int8=True,
        eval_images=args.eval_images,
    )  # fmt: skip
    fp32, int8 = report["variants"]["fp32"], report["variants"]["int8"]
    result = run_benchmark(
        [args.config_file, args.teacher_config],
        str(out / "latency"),
        onnx_files=[str(out / "export" / "student_e2e.onnx"), None],
        threads=args.threads,
        runs=args.runs,
        size=args.size,
        int8=True,
    )  # the student's AP comes from the export's report.json beside its graph
    result["export"] = dict(
        checkpoint=portable_path(args.checkpoint),
        config=portable_path(args.config_file),
        ap_pytorch=report["ap_torch"]["AP"],
        ap_fp32=fp32["ap"]["AP"],
        ap_int8=int8["ap"]["AP"],
        delta_ap_int8=int8["delta_ap"],
        eval_images=report["images"]["eval"],
        fp32_convs_in_int8_graph=int8.get("fp32_convs"),
    )
    result["command"] = "python benchmarks/export_latency.py " + " ".join(argv or sys.argv[1:])
    result["finished"] = now_iso()
    result = _portable(result)
    print(latency_table(result))
    if not args.no_publish:
        write_json(result, RESULTS_DIR / "latency.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
