#!/usr/bin/env python
"""The quickstart: teacher (cached), baseline student, distilled student, one table.

    python tools/quickstart.py [--output output/quickstart] [--device cpu] [--threads N]
        [key=value ...]

1. renders the embedded synthetic dataset (once, cached);
2. trains the RetinaNet teacher, or reuses the one cached under ``$D2KD_CACHE/teachers/``
   (keyed by its recipe and the dataset, ``d2kd.utils.teacher_cache``);
3. trains the R18 baseline student alone and the same student under the teacher (FPN feature
   MSE), side by side on a CPU;
4. evaluates all three on the synthetic val split and prints one table (also results.json/.md).

Every stage shows its progress and checkpoints about once a minute; Ctrl-C stops every child
run, and running the same command again resumes where it stopped. Extra ``key=value``
overrides go to the two student runs (e.g. ``train.max_iter=200`` for a smoke run).
"""

import argparse
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from d2kd._deps import require_detectron2  # noqa: E402

require_detectron2()

from tqdm import tqdm  # noqa: E402

from d2kd.utils.files import atomic_write_text, cache_root, read_json, write_json  # noqa: E402
from d2kd.utils.hardware import hardware  # noqa: E402
from d2kd.utils.runs import Job, free_cores, run_jobs, train_net_cmd  # noqa: E402

TEACHER = "configs/quickstart/retinanet_R18w_teacher.py"
BASELINE = "configs/quickstart/retinanet_R18_baseline.py"
DISTILL = "configs/quickstart/mse_R18_from_R18w.py"
# Checkpoint periods (iterations) that make an interruption cost under a minute on 2 CPU
# cores (teacher ~0.6 s/iteration, each student ~0.7 s when two share the cores).
TEACHER_CKPT_PERIOD, STUDENT_CKPT_PERIOD = 100, 80
ITER = re.compile(r"\biter: (\d+)\b")


def say(msg: str) -> None:
    tqdm.write(f"[quickstart] {msg}")


def shown(path: str) -> str:
    """A path as a reader would type it: relative to the repository or the cache root."""
    for base, name in ((ROOT, ""), (str(cache_root()), "$D2KD_CACHE/")):
        if os.path.abspath(path).startswith(base + os.sep):
            return name + os.path.relpath(path, base)
    return path


def max_iter(recipe: str, opts=()) -> int:
    from d2kd.config import load_config

    return int(load_config(os.path.join(ROOT, recipe), opts, owner="quickstart").train.max_iter)


def render_dataset(opts) -> None:
    """Render the students' synthetic dataset once (synth: 3,500 images, a minute or two)."""
    from d2kd.config import load_config
    from d2kd.data.synthetic import BUILTIN_SPECS, dataset_dir, render_synthetic

    cfg = load_config(os.path.join(ROOT, BASELINE), opts, owner="quickstart")
    name = str(cfg.dataloader.train.dataset.names).rsplit("_", 1)[0]
    spec = BUILTIN_SPECS.get(name)
    if spec is None or (dataset_dir(spec) / "spec.json").is_file():
        return
    total = spec.num_train + spec.num_val
    with tqdm(total=total, desc=f"rendering {name}", unit="img") as bar:
        render_synthetic(spec, progress=lambda done, _: bar.update(done - bar.n))


def train(jobs, threads: int) -> None:
    """Run train_net jobs side by side, one progress bar each (iterations parsed from logs)."""
    bars = [
        tqdm(total=total, desc=label, unit="it", position=i, leave=True)
        for i, (label, _, _, total) in enumerate(jobs)
    ]
    runs = []
    for bar, (label, recipe, opts, _) in zip(bars, jobs):
        out = next(o.split("=", 1)[1] for o in opts if o.startswith("train.output_dir="))

        def on_line(line: str, bar=bar) -> None:
            m = ITER.search(line)
            if m:
                bar.update(int(m.group(1)) + 1 - bar.n)
            elif "Start inference" in line:
                bar.set_postfix_str("evaluating")

        cmd = train_net_cmd(recipe, *opts)
        runs.append(Job(cmd, out, dict(role=label), threads, "quickstart.log", label, on_line))
    try:
        errors = run_jobs(runs, max_parallel=len(runs))
    finally:
        for bar in bars:
            bar.close()
    failed = [str(e).splitlines()[0] for e in errors if e is not None]
    if failed:
        sys.exit("[quickstart] training failed: " + "; ".join(failed))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "quickstart"))
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads in all (default: the cores not busy now, from the load average)",
    )
    parser.add_argument("--teacher-dir", default=None, help="override the teacher cache folder")
    parser.add_argument(
        "--teacher-path",
        nargs="?",
        const=TEACHER,
        default=None,
        metavar="RECIPE",
        help="print the cached checkpoint of a teacher recipe (default: the quickstart's) and exit",
    )
    parser.add_argument("opts", nargs="*", help="key=value overrides for the student runs")
    args = parser.parse_args()
    from d2kd.utils.teacher_cache import teacher_cache_dir

    if args.teacher_path:
        folder = args.teacher_dir or str(teacher_cache_dir(os.path.join(ROOT, args.teacher_path)))
        print(os.path.join(folder, "model_final.pth"))
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = args.threads or free_cores()
    say(
        f"{device}, {threads} CPU thread(s) of {os.cpu_count()} (cores not busy now; "
        "--threads N to choose). Ctrl-C stops; the same command resumes."
    )
    dev = [f"train.device={device}"]
    timings, t0 = {}, time.time()
    render_dataset(args.opts)

    teacher_dir = args.teacher_dir or str(teacher_cache_dir(os.path.join(ROOT, TEACHER)))
    teacher_ckpt = os.path.join(teacher_dir, "model_final.pth")
    if os.path.isfile(teacher_ckpt):
        say(f"reusing the cached teacher {shown(teacher_ckpt)}")
    else:
        n = max_iter(TEACHER)
        say(f"training the teacher once into {shown(teacher_dir)} ({n} iterations)")
        start = time.time()
        opts = ["--resume", f"train.output_dir={teacher_dir}", *dev]
        opts.append(f"train.checkpointer.period={TEACHER_CKPT_PERIOD}")
        train([("teacher", TEACHER, opts, n)], threads)
        timings["teacher_train_s"] = round(time.time() - start, 1)
    teacher_eval = os.path.join(teacher_dir, "eval_final.json")
    if not os.path.isfile(teacher_eval):
        opts = ["--eval-only", f"train.init_checkpoint={teacher_ckpt}"]
        train(
            [("teacher eval", TEACHER, [*opts, f"train.output_dir={teacher_dir}", *dev], 0)],
            threads,
        )

    outs = {"baseline": BASELINE, "mse": DISTILL}
    extra = {"baseline": [], "mse": [f"model.teacher.weights={teacher_ckpt}"]}
    parallel = device == "cpu" and threads >= 2
    jobs = []
    for name, recipe in outs.items():
        out = os.path.join(args.output, name)
        opts = ["--resume", f"train.output_dir={out}", *extra[name], *dev, *args.opts]
        opts.append(f"train.checkpointer.period={STUDENT_CKPT_PERIOD}")
        jobs.append((f"student {name}", recipe, opts, max_iter(recipe, args.opts)))
    start = time.time()
    if parallel:  # two single-thread runs beat one two-thread run after the other on 2 cores
        train(jobs, max(1, threads // 2))
    else:
        for job in jobs:
            train([job], threads)
    timings["students_s"] = round(time.time() - start, 1)

    results = {"teacher R18-wide": read_json(teacher_eval)["bbox"]}
    for name, label in (("baseline", "baseline"), ("mse", "distilled (MSE)")):
        results[f"student R18 {label}"] = read_json(
            os.path.join(args.output, name, "eval_last.json")
        )["bbox"]
    keys = ("AP", "AP50", "AP75", "APs", "APm")
    rows = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, r in results.items():
        cells = ("—" if r.get(k) is None else f"{r[k]:.1f}" for k in keys)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    timings["total_s"] = round(time.time() - t0, 1)
    schedule = {
        "teacher": max_iter(TEACHER),
        "baseline": max_iter(BASELINE, args.opts),
        "distilled": max_iter(DISTILL, args.opts),
    }
    hw = hardware(device)
    hw["torch_threads"] = threads
    summary = dict(
        results=results,
        timings_s=timings,
        teacher=shown(teacher_ckpt),
        schedule_max_iter=schedule,
        hardware=hw,
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    json_path = write_json(summary, os.path.join(args.output, "results.json"))
    md_path = atomic_write_text(os.path.join(args.output, "results.md"), table + "\n")
    print(table)
    say(f"wall time {timings}; results in {shown(str(json_path))} and {shown(str(md_path))}")
    say(
        f"students in {shown(os.path.join(args.output, 'baseline'))} and {shown(os.path.join(args.output, 'mse'))}"
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(
            "\n[quickstart] stopped; run the same command again to resume from the last checkpoint"
        )
