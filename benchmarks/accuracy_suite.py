#!/usr/bin/env python
"""The accuracy suite: what distillation buys, per method, over seeds, on the synthetic dataset.

    python benchmarks/accuracy_suite.py [--out output/benchmarks/accuracy] [--seeds 0 1 2]
        [--methods baseline mse fgd ...] [--device cpu|cuda] [--schedule-scale 1.0]
        [--smoke] [--dry-run]

1. The teachers (each method names its own; most share the quickstart RetinaNet teacher, HEAD's
   rows use the Faster R-CNN one): reused from the quickstart's cache (``$D2KD_CACHE/teachers/``,
   :mod:`d2kd.utils.teacher_cache`), else trained there with tools/train_net.py --resume;
   evaluated once.
2. For each method (every recipe that declares ``__benchmark__``, see benchmarks/_common.py) and
   seed: tools/train_net.py --resume into ``<out>/<method>/seed<k>``; a run whose final evaluation
   exists is skipped, so running the command again after an interruption resumes where it stopped.
3. ``<out>/accuracy.json`` (per-run AP/AP50/AP75/APs/APm/APl, mean ± std per method, gain over the
   baseline, share of the teacher–baseline gap closed, hardware, schedule, timestamps, wall time
   per run), a markdown table on stdout, and ``<out>/accuracy.png``. A full (non-smoke) run also
   merges its methods into benchmarks/results/accuracy.json (methods run here replace their
   earlier entries, others are kept), which benchmarks/render_tables.py renders. Paths in the
   JSON are relative to the repository, or start with ``$D2KD_CACHE/``.

``--smoke`` uses the tiny test recipes with a few iterations (CI); a method without a smoke
recipe, or whose teacher has no tiny stand-in, is skipped and named. ``--schedule-scale``
multiplies every max_iter, the teacher's included (a scaled teacher is cached under its own key).
"""

import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MAIN_TEACHER,
    METHODS,
    RESULTS_DIR,
    ROOT,
    TINY_TEACHER,
    accuracy_table,
    now_iso,
    portable_path,
    select_methods,
)

from d2kd.config import load_config  # noqa: E402
from d2kd.utils.files import read_json, write_json  # noqa: E402
from d2kd.utils.hardware import hardware  # noqa: E402
from d2kd.utils.runs import (  # noqa: E402
    BOX_METRICS,
    PROGRESS_FILE,
    Job,
    RunFailed,
    eval_result,
    read_box_metrics,
    run_job,
    stop_children,
    train_net_cmd,
)
from d2kd.utils.teacher_cache import teacher_cache_dir  # noqa: E402

ALL_METRICS = BOX_METRICS
PROGRESS = PROGRESS_FILE  # per run folder: wall time so far, schedule, status


def log(msg: str) -> None:
    print(f"[accuracy] {msg}", flush=True)


def recipe_info(recipe: str) -> Dict[str, Any]:
    """max_iter of a recipe and whether it is a distillation recipe (has a teacher)."""
    cfg = load_config(str(ROOT / recipe), owner="accuracy")
    teacher = cfg.model.get("teacher", None) if hasattr(cfg.model, "get") else None
    return dict(max_iter=int(cfg.train.max_iter), distill=teacher is not None)


def fmt_ap(metrics: Dict[str, Optional[float]]) -> str:
    return "n/a" if metrics.get("AP") is None else f"{metrics['AP']:.2f}"


THREADS: Optional[int] = None  # per child run; set from --jobs in main()


def run_logged(cmd: List[str], run_dir: Path, extra: Dict[str, Any]) -> Dict[str, Any]:
    """Run ``cmd`` with its output appended to ``run_dir/bench_train.log``; return its tally
    (``bench_run.json``: wall time summed over interrupted invocations, status).

    Raises:
        RunFailed: naming the log when the command fails.
    """
    label = f"[accuracy] {Path(cmd[3]).name if len(cmd) > 3 else cmd[-1]}"
    return run_job(Job(cmd, run_dir, info=extra, label=label, threads=THREADS))


def ensure_teacher(args, plan: Dict[str, Any]) -> Dict[str, Any]:
    """Train (or reuse) and evaluate the teacher; return its record for accuracy.json."""
    tdir = Path(plan["dir"])
    ckpt = tdir / "model_final.pth"
    dev = [f"train.device={args.device}"] if args.device else []
    train = train_net_cmd(
        plan["recipe"], "--resume", f"train.output_dir={tdir}", *plan["opts"], *dev
    )
    evaluate = train_net_cmd(
        plan["recipe"], "--eval-only", f"train.init_checkpoint={ckpt}", f"train.output_dir={tdir}"
    )
    evaluate += [*plan["opts"], *dev]
    record = dict(plan, dir=portable_path(tdir), checkpoint=portable_path(ckpt))
    if args.dry_run:
        print(("# (cached) " if ckpt.is_file() else "") + " ".join(train))
        print(("# (done) " if eval_result(tdir) else "") + " ".join(evaluate))
        return record
    if ckpt.is_file():
        log(f"reusing the teacher {ckpt}")
    else:
        log(
            f"training the teacher ({plan['max_iter']} iterations) into {tdir}"
            + ("" if args.smoke else "; about an hour on 2 CPU cores for the default recipe")
            + ". Interrupt and rerun to resume."
        )
        record["train_wall_s"] = run_logged(train, tdir, dict(role="teacher"))["wall_s"]
    result = eval_result(tdir)
    if result is None:
        log("evaluating the teacher once")
        run_logged(evaluate, tdir, dict(role="teacher-eval"))
        result = eval_result(tdir)
    record["metrics"] = read_box_metrics(result)
    log(f"teacher AP {fmt_ap(record['metrics'])}")
    return record


def stats(values: List[float]) -> Dict[str, Any]:
    values = [v for v in values if v is not None]
    if not values:
        return dict(mean=None, std=None, values=[])
    std = statistics.stdev(values) if len(values) > 1 else None
    return dict(mean=statistics.fmean(values), std=std, values=values)


def mean_or_none(values: List[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def aggregate(
    runs: List[Dict[str, Any]], teachers: Dict[str, Dict[str, Any]], infos
) -> Dict[str, Any]:
    """Per method: metric mean ± std over seeds, AP gain over the baseline, and the share of the
    gap between the baseline and the method's own teacher that it closed."""
    methods: Dict[str, Any] = {}
    for name in dict.fromkeys(r["method"] for r in runs):
        ok = [r for r in runs if r["method"] == name and r["status"] == "ok"]
        methods[name] = dict(
            recipe=infos[name]["recipe"],
            teacher=infos[name]["teacher"],
            max_iter=infos[name]["max_iter"],
            n=len(ok),
            seeds=[r["seed"] for r in ok],
            metrics={k: stats([r["metrics"][k] for r in ok]) for k in ALL_METRICS},
            # None for runs trained outside the suite (no bench_run.json tally).
            wall_s_mean=mean_or_none([r.get("wall_s") for r in ok]),
        )
    return dict(methods=methods, **gains(methods, teachers))


def gains(methods: Dict[str, Any], teachers: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Fill each method's ``gain_AP`` and ``gap_closed`` (in place); return the gaps per teacher."""
    base = methods.get("baseline", {}).get("metrics", {}).get("AP", {}).get("mean")
    gaps = {}
    for recipe, t in teachers.items():
        t_ap = (t.get("metrics") or {}).get("AP")
        gaps[recipe] = None if base is None or t_ap is None else t_ap - base
    for m in methods.values():
        ap = m["metrics"]["AP"]["mean"]
        gap = gaps.get(m.get("teacher"))
        m["gain_AP"] = None if ap is None or base is None else ap - base
        m["gap_closed"] = (
            m["gain_AP"] / gap if m["gain_AP"] is not None and gap and gap > 0 else None
        )
    main_gap = gaps.get(MAIN_TEACHER, next(iter(gaps.values()), None))
    return dict(teacher_baseline_gap=main_gap, teacher_baseline_gaps=gaps)


def publish(result: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """Merge this run's methods into the published JSON (earlier methods are kept)."""
    old = read_json(path) if path.is_file() else {}
    if old.get("smoke") or not old.get("methods"):
        old = {}
    ran = set(result["methods"])
    merged = dict(result)
    merged["teachers"] = {**old.get("teachers", {}), **result.get("teachers", {})}
    for rec in (old.get("teacher"), result.get("teacher")):  # files written before "teachers"
        if rec and rec.get("recipe"):
            merged["teachers"].setdefault(rec["recipe"], rec)
    merged["methods"] = {
        **{k: v for k, v in old.get("methods", {}).items() if k not in ran},
        **result["methods"],
    }
    merged["runs"] = [r for r in old.get("runs", []) if r["method"] not in ran] + result["runs"]
    sched_old, sched = old.get("schedule", {}), result["schedule"]
    merged["schedule"] = dict(
        sched,
        max_iter={**sched_old.get("max_iter", {}), **sched.get("max_iter", {})},
        recipes={**sched_old.get("recipes", {}), **sched.get("recipes", {})},
    )
    merged["seeds"] = sorted(set(old.get("seeds", [])) | set(result["seeds"]))
    merged.pop("not_implemented", None)  # older files' name of "skipped"
    merged["skipped"] = {
        k: v for k, v in result.get("skipped", {}).items() if k not in merged["methods"]
    }
    merged.update(gains(merged["methods"], merged["teachers"]))
    write_json(merged, path)
    return merged


def plot(result: Dict[str, Any], path: Path) -> None:
    """AP mean ± std per method as bars, with the teacher and baseline as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, m in result["methods"].items() if m["metrics"]["AP"]["mean"] is not None]
    means = [result["methods"][n]["metrics"]["AP"]["mean"] for n in names]
    stds = [result["methods"][n]["metrics"]["AP"]["std"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 4))
    ax.bar(names, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    t_ap = (result["teacher"].get("metrics") or {}).get("AP")
    if t_ap is not None:
        ax.axhline(t_ap, color="tab:red", linestyle="--", label=f"teacher {t_ap:.1f}")
    if "baseline" in names:
        b = result["methods"]["baseline"]["metrics"]["AP"]["mean"]
        ax.axhline(b, color="gray", linestyle=":", label=f"baseline {b:.1f}")
    ax.set_ylabel("box AP (synthetic val)")
    ax.set_title(f"AP mean ± std over seeds {result['seeds']} ({result['hardware']['device']})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_one(
    args: argparse.Namespace,
    name: str,
    seed: int,
    info: Dict[str, Any],
    teacher_ckpt: str,
    out: Path,
    prepare_only: bool = False,
) -> Optional[Dict[str, Any]]:
    """Train and evaluate one method x seed (or skip it when done); None under --dry-run.

    ``prepare_only``: run the method's prepare command (if any, and the run is not done) and
    return None: with --jobs > 1 those run first, one at a time, since seeds share their output.
    """
    run_dir = out / name / f"seed{seed}"
    opts = [f"train.output_dir={run_dir}", f"train.seed={seed}"]
    opts += [f"train.max_iter={info['max_iter']}", f"train.eval_period={info['max_iter']}"]
    opts += [f"train.device={args.device}"] if args.device else []
    opts += [f"model.teacher.weights={teacher_ckpt}"] if info["distill"] else []
    method = METHODS[name]
    fill = dict(recipe=method.recipe, teacher=teacher_ckpt, run_dir=str(run_dir), seed=seed)
    prepare = [sys.executable, *(a.format(**fill) for a in method.prepare)]
    if method.prepare and not args.smoke:
        opts += [o.format(**fill) for o in method.prepare_overrides]
    else:
        prepare = []
    cmd = train_net_cmd(info["recipe"], "--resume", *opts, *method.overrides)
    progress_path = run_dir / PROGRESS
    progress = read_json(progress_path) if progress_path.is_file() else {}
    # Done: evaluated after its last iteration, on this schedule (a longer one resumes from it).
    done = eval_result(run_dir) and progress.get("max_iter", info["max_iter"]) == info["max_iter"]
    if args.collect and not done:
        log(f"{name} seed {seed}: not run yet (--collect trains nothing)")
        return None
    if args.dry_run:
        for c in ([prepare] if prepare else []) + [cmd]:
            print(("# (done) " if done else "") + " ".join(c))
        return None
    record = dict(method=name, seed=seed, recipe=info["recipe"], output_dir=portable_path(run_dir))
    record["max_iter"] = info["max_iter"]
    if prepare_only:
        if prepare and not done:
            log(f"{name} seed {seed}: preparing ({' '.join(prepare[1:3])})")
            try:
                run_logged(prepare, run_dir, dict(max_iter=info["max_iter"]))
            except RunFailed as e:  # its training run fails on the missing data and says so
                print(e, file=sys.stderr)
        return None
    try:
        if done:
            log(f"{name} seed {seed}: done earlier, skipped")
        else:
            if prepare and args.jobs <= 1:
                log(f"{name} seed {seed}: preparing ({' '.join(prepare[1:3])})")
                run_logged(prepare, run_dir, dict(max_iter=info["max_iter"]))
            log(f"{name} seed {seed}: training {info['max_iter']} iterations in {run_dir}")
            progress = run_logged(cmd, run_dir, dict(max_iter=info["max_iter"]))
        eval_json = eval_result(run_dir)
        if eval_json is None:
            raise RuntimeError(f"[accuracy] {run_dir} has no evaluation after training")
        record.update(status="ok", metrics=read_box_metrics(eval_json))
        log(f"{name} seed {seed}: AP {fmt_ap(record['metrics'])}")
    except RuntimeError as e:
        print(e, file=sys.stderr)
        record.update(status="failed", error=str(e).splitlines()[0], metrics={})
    record.update(wall_s=progress.get("wall_s"), finished=progress.get("finished"))
    return record


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "output" / "benchmarks" / "accuracy"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=None, help="default: every declared method")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: the recipes' choice)")
    ap.add_argument("--schedule-scale", type=float, default=1.0, help="multiplies every max_iter")
    ap.add_argument("--smoke", action="store_true", help="tiny test recipes, a few iterations")
    ap.add_argument("--smoke-iters", type=int, default=2, help="max_iter of --smoke runs")
    ap.add_argument("--teacher-dir", default=None, help="teacher folder (default: the cache)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument(
        "--collect",
        action="store_true",
        help="train nothing: tabulate (and publish) the runs that are complete",
    )
    ap.add_argument("--no-publish", action="store_true", help="no benchmarks/results/ copy")
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs side by side, each with cores/jobs threads (2 on a 2-core CPU: two one-thread "
        "runs take less wall time than the same two with two threads one after the other)",
    )
    args = ap.parse_args(argv)
    if args.schedule_scale <= 0:
        ap.error("--schedule-scale must be positive")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    started, t0 = now_iso(), time.time()
    names = select_methods(args.methods, "accuracy")
    skipped: Dict[str, str] = {}
    if args.smoke:
        for n in names:
            if not METHODS[n].smoke:
                skipped[n] = f"{n}: no smoke recipe"
            elif METHODS[n].teacher != MAIN_TEACHER:
                skipped[n] = f"{n}: no smoke teacher for {METHODS[n].teacher}"
    for note in skipped.values():
        log(note)
    names = [n for n in names if n not in skipped]

    def iters(n: int) -> int:
        return args.smoke_iters if args.smoke else max(1, round(n * args.schedule_scale))

    infos = {}
    for n in names:
        recipe = METHODS[n].smoke if args.smoke else METHODS[n].recipe
        infos[n] = dict(recipe=recipe, teacher=METHODS[n].teacher, **recipe_info(recipe))
        infos[n]["max_iter"] = iters(infos[n]["max_iter"])
    # The main teacher always (the table's reference row), then every other teacher a method names.
    teacher_recipes = list(dict.fromkeys([MAIN_TEACHER, *(infos[n]["teacher"] for n in names)]))
    teachers: Dict[str, Dict[str, Any]] = {}
    teacher_ckpts: Dict[str, str] = {}  # absolute, for the runs' overrides
    for key in teacher_recipes:
        t_recipe = TINY_TEACHER if args.smoke else key
        t_iters = iters(recipe_info(t_recipe)["max_iter"])
        t_opts = [f"train.max_iter={t_iters}"] if args.smoke or args.schedule_scale != 1 else []
        if args.teacher_dir and key == MAIN_TEACHER:
            t_dir = Path(args.teacher_dir).resolve()
        elif args.smoke:
            t_dir = out / "teacher"
        else:  # a scaled schedule is part of the cache key: its teacher has a folder of its own
            t_dir = teacher_cache_dir(ROOT / t_recipe, t_opts)
        t_plan = dict(recipe=t_recipe, dir=t_dir, max_iter=t_iters, opts=t_opts)
        teacher_ckpts[key] = str(t_dir / "model_final.pth")
        needed = key == MAIN_TEACHER or any(
            infos[n]["distill"] and infos[n]["teacher"] == key for n in names
        )
        if (args.collect or not needed) and not (t_dir / "model_final.pth").is_file():
            # --collect trains nothing; and when only teacher-free rows refer to it (HEAD's assist
            # row, TF-HEAD), their runs need no weights: their gap closed waits for the teacher.
            log(f"{key}: not trained yet ({'--collect' if args.collect else 'not needed'})")
            teachers[key] = dict(
                recipe=t_recipe, dir=portable_path(t_dir), max_iter=t_iters, metrics=None
            )
            continue
        try:
            record = ensure_teacher(args, t_plan)
        except RunFailed as e:
            print(e, file=sys.stderr)
            return 1
        teachers[key] = {k: v for k, v in record.items() if k != "opts"}
    teacher = teachers[MAIN_TEACHER]

    import torch

    hw = hardware(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    summary = dict(
        benchmark="accuracy",
        smoke=args.smoke,
        started=started,
        hardware=hw,
        command=" ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        schedule=dict(
            scale=args.schedule_scale,
            max_iter={
                **{f"teacher {k}": t["max_iter"] for k, t in teachers.items()},
                **{n: infos[n]["max_iter"] for n in names},
            },
            recipes={"teacher": teacher["recipe"], **{n: infos[n]["recipe"] for n in names}},
        ),
        seeds=list(args.seeds),
        teacher=teacher,
        teachers=teachers,
        skipped=skipped,
    )
    runs: List[Dict[str, Any]] = []
    result: Dict[str, Any] = {}
    pairs = [(n, s) for n in names for s in args.seeds]
    lock = threading.Lock()

    def one(pair) -> None:
        name, seed = pair
        t_ckpt = teacher_ckpts[infos[name]["teacher"]]
        record = run_one(args, name, seed, infos[name], t_ckpt, out)
        if record is None:  # --dry-run, or --collect and not run yet
            return
        with lock:
            runs.append(record)
            runs.sort(key=lambda r: pairs.index((r["method"], r["seed"])))
            result.clear()
            result.update(
                summary,
                finished=now_iso(),
                total_wall_s=round(time.time() - t0, 1),
                runs=list(runs),
                **aggregate(runs, teachers, infos),
            )
            write_json(result, out / "accuracy.json")  # after every run: partial results survive

    global THREADS
    if args.jobs > 1 and not (args.dry_run or args.collect):
        THREADS = max(1, (os.cpu_count() or 1) // args.jobs)
        for name, seed in pairs:  # shared prepare steps first, one at a time
            run_one(args, name, seed, infos[name], teacher_ckpts[infos[name]["teacher"]], out, True)
        try:
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                list(pool.map(one, pairs))
        except KeyboardInterrupt:
            stop_children()
            raise
    else:
        for pair in pairs:
            one(pair)
    failures = sum(r["status"] != "ok" for r in runs)
    if args.dry_run:
        return 0
    if not runs:
        log("nothing to run")
        return 1
    print("\n" + accuracy_table(result) + "\n")
    gap = result["teacher_baseline_gap"]
    base_std = result["methods"].get("baseline", {}).get("metrics", {}).get("AP", {}).get("std")
    if gap is not None and (gap <= 0 or (base_std and gap < 2 * base_std)):
        log(f"warning: the teacher-baseline gap ({gap:.2f} AP) is not above seed noise")
    plot(result, out / "accuracy.png")
    log(f"wrote {out / 'accuracy.json'} and {out / 'accuracy.png'}")
    if not args.smoke and not args.no_publish and not failures:
        publish(result, RESULTS_DIR / "accuracy.json")
        log(
            "merged into benchmarks/results/accuracy.json (render with benchmarks/render_tables.py)"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
