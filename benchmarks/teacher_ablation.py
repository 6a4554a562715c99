#!/usr/bin/env python
"""Why the synthetic RetinaNet teacher learned so little: one change at a time, short runs.

    python benchmarks/teacher_ablation.py [--rows base lr0.01 ...] [--iters 600] [--jobs 2]
        [--out output/benchmarks/teacher_ablation] [--collect]

Every row trains ``--recipe`` (default: the RetinaNet teacher recipe as it was before this
ablation, ``configs/quickstart/ablation/retinanet_R18w_teacher_v1.py``) from scratch for
``--iters`` iterations at batch 8 with the row's overrides, evaluates it on synth_val with
COCOEvaluator, and records AP/AP50/APs/APm in ``benchmarks/results/teacher_ablation.json``,
which ``benchmarks/render_tables.py`` renders into ``benchmarks/README.md``. Rows run side by
side (``--jobs``, one thread each), so their wall times are not step costs. A row whose
evaluation exists is skipped: rerunning resumes where it stopped.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from d2kd.utils.files import read_json, write_json  # noqa: E402
from d2kd.utils.hardware import hardware  # noqa: E402
from d2kd.utils.runs import (  # noqa: E402
    Job,
    eval_result,
    read_box_metrics,
    run_jobs,
    train_net_cmd,
)

BASE = "configs/quickstart/ablation/retinanet_R18w_teacher_v1.py"
RESULTS = ROOT / "benchmarks" / "results" / "teacher_ablation.json"

# The P2-P6 variant: FPN from res2, the head on P2-P6, the anchors one level finer.
P2 = (
    "model.backbone.bottom_up.out_features=[res2,res3,res4,res5]",
    "model.backbone.in_features=[res2,res3,res4,res5]",
    "model.head_in_features=[p2,p3,p4,p5,p6]",
    "model.anchor_generator.strides=[4,8,16,32,64]",
)

# name -> (what changes against the base recipe, overrides). One change per row unless the row
# says it combines earlier ones.
ROWS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "base": ("the v1 teacher recipe as it was (SGD lr 0.02, head without norm)", ()),
    "lr0.01": ("lr 0.01", ("optimizer.lr=0.01",)),
    "lr0.005": (
        "lr 0.005 (linear scaling of Detectron2's 0.01 at batch 16)",
        ("optimizer.lr=0.005",),
    ),
    "head_gn": ("GroupNorm in the head towers", ("+model.head.norm=GN",)),
    "head_bn": ("BatchNorm per level in the head towers", ("+model.head.norm=BN",)),
    "prior0.1": ("classifier bias prior 0.1 (was 0.01)", ("model.head.prior_prob=0.1",)),
    "giou": ("GIoU box loss (was smooth-L1 with beta 0)", ("+model.box_reg_loss_type=giou",)),
    "match0.3": (
        "anchor matcher IoU thresholds 0.3 / 0.4 (was 0.4 / 0.5)",
        ("model.anchor_matcher.thresholds=[0.3,0.4]",),
    ),
    "focal_a0.5": ("focal loss alpha 0.5 (was 0.25)", ("model.focal_loss_alpha=0.5",)),
    "x2_iters": ("2x the iterations (1200)", ("train.max_iter=1200", "train.eval_period=1200")),
    "p2": (
        "FPN P2-P6: the same anchor sizes (8-203 px) on strides 4-64 (was P3-P7, strides 8-128)",
        P2,
    ),
    "offset0.5": (
        "anchors centred in their cells (offset 0.5, was 0)",
        ("model.anchor_generator.offset=0.5",),
    ),
    # Combinations of the changes that helped on their own.
    "bn+match0.3": (
        "head_bn and match0.3 together",
        ("+model.head.norm=BN", "model.anchor_matcher.thresholds=[0.3,0.4]"),
    ),
    "bn+match0.3+p2": (
        "head_bn, match0.3 and p2 together",
        ("+model.head.norm=BN", "model.anchor_matcher.thresholds=[0.3,0.4]", *P2),
    ),
}


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=None, help=f"default: all of {', '.join(ROWS)}")
    ap.add_argument("--recipe", default=BASE)
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--jobs", type=int, default=2, help="rows trained side by side")
    ap.add_argument("--out", default=str(ROOT / "output" / "benchmarks" / "teacher_ablation"))
    ap.add_argument("--collect", action="store_true", help="train nothing; tabulate what is done")
    ap.add_argument("--no-publish", action="store_true")
    args = ap.parse_args(argv)
    unknown = [r for r in args.rows or () if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    return args


def row_command(args, name: str, run_dir: Path) -> List[str]:
    opts = [
        "--resume",
        f"train.output_dir={run_dir}",
        f"train.max_iter={args.iters}",
        f"train.eval_period={args.iters}",
        f"train.checkpointer.period={max(50, args.iters // 3)}",
        "train.device=cpu",
        *ROWS[name][1],
    ]
    return train_net_cmd(args.recipe, *opts)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    names = args.rows or list(ROWS)
    todo = [n for n in names if eval_result(out / n) is None]
    if todo and not args.collect:
        threads = max(1, 2 // max(1, args.jobs))
        jobs = [
            Job(row_command(args, n, out / n), out / n, dict(row=n), threads=threads, label=n)
            for n in todo
        ]
        print(f"[ablation] training {len(jobs)} rows, {args.jobs} at a time: {', '.join(todo)}")
        run_jobs(
            jobs, args.jobs, on_done=lambda j, t, e: print(f"[ablation] {j.label}: {e or 'done'}")
        )
    old = read_json(RESULTS) if RESULTS.is_file() else {}
    rows = dict(old.get("rows", {}))
    for n in names:
        result = eval_result(out / n)
        if result is None:
            continue
        cmd = row_command(args, n, Path(f"output/benchmarks/teacher_ablation/{n}"))
        rows[n] = dict(
            change=ROWS[n][0],
            overrides=list(ROWS[n][1]),
            command="python "
            + " ".join(
                Path(c).relative_to(ROOT).as_posix() if c.startswith(str(ROOT)) else c
                for c in cmd[1:]
            ),
            metrics=read_box_metrics(result),
        )
    data = dict(
        benchmark="teacher_ablation",
        recipe=args.recipe,
        iters=args.iters,
        batch=8,
        rows={n: rows[n] for n in [*ROWS, *rows] if n in rows},
        hardware=old.get("hardware") or hardware("cpu"),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    for n, r in data["rows"].items():
        m = r["metrics"]
        print(f"{n:12s} AP {m['AP']:.1f}  AP50 {m['AP50']:.1f}  {r['change']}")
    if not args.no_publish:
        write_json(data, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
