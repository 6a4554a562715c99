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
import json
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
        "--unsafe-load", action="store_true", help="torch.load(weights_only=False) fallback"
    )
    p.add_argument("--opts", nargs="*", default=[], help="LazyConfig overrides key=value")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("d2kd").setLevel(logging.INFO)
    import d2kd.data  # noqa: F401  (registers the synthetic datasets recipes may name)
    from d2kd.export import ExportError, export_student
    from d2kd.export.parity import Tolerances

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
    except ExportError as e:
        print(str(e), file=sys.stderr)
        return 1
    print(_summary(report, args.output))
    return 0


def _summary(report: dict, output: str) -> str:
    lines = [f"[export] {report['model']} exported to {output} ({report['status']})"]
    for name, v in report.get("variants", {}).items():
        if v.get("status") == "skipped":
            lines.append(f"  {name}: skipped ({v['reason']})")
            continue
        det = v.get("detections", {})
        lines.append(
            f"  {name}: files {json.dumps(v.get('files'))}, AP {v.get('ap', {}).get('AP')}, "
            f"ΔAP {v.get('delta_ap')}, matched {det.get('matched')}/{det.get('required')}, "
            f"max box diff {det.get('max_box_px')} px, max score diff {det.get('max_score')}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
