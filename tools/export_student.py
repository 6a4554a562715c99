#!/usr/bin/env python
"""Export the student of a d2kd run: stock checkpoint, ONNX, parity gate (see d2kd.export).

Example::

    python tools/export_student.py --config-file configs/quickstart/mse_R18_from_R18w.py \\
        --checkpoint output/quickstart/mse/model_final.pth --output output/quickstart/mse/export

Exit status: 0 when everything was exported and every gate passed, 1 otherwise (the message
names the file, key, image or detection at fault; ``OUTPUT/report.failed.json`` has details).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True, help="LazyConfig recipe (.py)")
    p.add_argument("--checkpoint", required=True, help="d2kd checkpoint (model_final.pth)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--format", default="onnx", choices=["onnx", "none"])
    p.add_argument("--fp16", action="store_true", help="also write and gate an fp16 graph")
    p.add_argument("--int8", action="store_true", help="also write and gate a static int8 graph")
    p.add_argument("--num-parity-images", type=int, default=16)
    p.add_argument("--eval-images", type=int, default=200, help="images for AP; 0: all")
    p.add_argument("--calibration-images", type=int, default=32, help="int8 calibration")
    p.add_argument("--int8-max-dap", type=float, default=1.0, help="int8 |ΔAP| bound")
    p.add_argument("--fp16-max-dap", type=float, default=0.5, help="fp16 |ΔAP| bound")
    p.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "legacy"])
    p.add_argument("--opset", type=int, default=None, help=">= 17; default 18 dynamo, 17 legacy")
    p.add_argument("--allow-foreign", action="store_true", help="accept non-d2kd checkpoints")
    p.add_argument(
        "--unsafe-load",
        action="store_true",
        help="load a trusted checkpoint that safe loading refuses (a full unpickle: can run code)",
    )
    p.add_argument(
        "--opts", nargs="*", default=[], help="overrides key=value (unknown keys are refused)"
    )
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("d2kd").setLevel(logging.INFO)
    import d2kd.data  # noqa: F401  (registers the synthetic datasets recipes may name)
    from d2kd.export import ExportError, export_student
    from d2kd.export.parity import Tolerances
    from d2kd.utils.files import DiskFullError

    tol = Tolerances(int8_max_dap=args.int8_max_dap, fp16_max_dap=args.fp16_max_dap)
    try:
        report = export_student(
            args.config_file,
            args.checkpoint,
            args.output,
            fmt=args.format,
            fp16=args.fp16,
            int8=args.int8,
            num_parity_images=args.num_parity_images,
            eval_images=args.eval_images,
            opts=args.opts,
            allow_foreign=args.allow_foreign,
            unsafe_load=args.unsafe_load,
            exporter=args.exporter,
            opset=args.opset,
            tolerances=tol,
            calibration_images=args.calibration_images,
        )
    except (ExportError, DiskFullError) as e:
        print(str(e), file=sys.stderr)
        return 1
    print(summary(report, args.output))
    return 0


def summary(report: dict, output: str) -> str:
    """What was exported and how each variant fared, with one AP table for all of them."""
    lines = [f"[export] {report['model']} exported to {output} ({report['status']})"]
    variants = report.get("variants", {})
    for name, v in variants.items():
        files = ", ".join(v.get("files", {}).values())
        if v.get("status") == "skipped":
            lines.append(f"  {name}: skipped ({v['reason']})")
            continue
        det = v.get("detections", {})
        if det.get("gated"):
            checks = (
                f"detections matched {det['matched']}/{det['required']} (max box diff "
                f"{det['max_box_px']:.2g} px, max score diff {det['max_score']:.2g})"
            )
        else:
            checks = f"detections not gated ({name} is judged by ΔAP)"
        if "raw" in v:
            checks += f"; raw tensors max |diff| {max(v['raw']['max_abs'].values()):.2g}"
        dap = v.get("delta_ap")
        dap = "n/a" if dap is None else f"{dap:+.3f}"
        lines.append(f"  {name}: {files}; {checks}; ΔAP {dap} (bound ±{v['max_abs_delta_ap']})")
    if "ap_torch" in report:
        rows = [("torch", report["ap_torch"])] + [
            (n, v["ap"]) for n, v in variants.items() if "ap" in v
        ]
        keys = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
        n = report.get("images", {}).get("eval", "?")
        lines += [f"  COCO box AP on {n} test images:", "    variant | " + " | ".join(keys)]
        for name, ap in rows:
            vals = [ap.get(k) for k in keys]
            cells = ["nan" if x is None or x != x else f"{x:.2f}" for x in vals]
            lines.append(f"    {name:7s} | " + " | ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
