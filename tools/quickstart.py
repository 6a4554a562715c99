#!/usr/bin/env python
"""The quickstart: teacher (cached), baseline student, distilled student, one table.

    python tools/quickstart.py [--output output/quickstart] [--device cpu] [key=value ...]

1. trains the RetinaNet teacher (R18, wide FPN and head) on the embedded synthetic dataset, or
   reuses the one cached
   under ``$D2KD_CACHE/teachers/`` (keyed by the recipe and the dataset version);
2. trains the R18 baseline student alone;
3. distils the same student from the teacher (FPN feature MSE);
4. evaluates all three on the synthetic val split and prints one table (also results.json/.md).

Every stage resumes where it stopped if the command is run again after an interruption.
Extra ``key=value`` overrides go to the baseline and the distillation runs (e.g.
``train.max_iter=200`` for a smoke run).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from d2kd._deps import require_detectron2  # noqa: E402

require_detectron2()

TEACHER = "configs/quickstart/retinanet_R18w_teacher.py"
BASELINE = "configs/quickstart/retinanet_R18_baseline.py"
DISTILL = "configs/quickstart/mse_R18_from_R18w.py"


def teacher_cache_dir(recipe: str) -> str:
    """Where the teacher of ``recipe`` is cached: keyed by its resolved config and the data."""
    from detectron2.config import LazyConfig
    from detectron2.data import MetadataCatalog

    import d2kd.data  # noqa: F401
    from d2kd.data.synthetic import SyntheticSpec

    cfg = LazyConfig.load(os.path.join(ROOT, recipe))
    for key in ("output_dir", "eval_period", "log_period", "checkpointer", "device"):
        cfg.train.pop(key, None)
    text = LazyConfig.to_py(cfg)
    meta = MetadataCatalog.get(cfg.dataloader.train.dataset.names)
    spec_key = getattr(meta, "d2kd_spec_key", None) or SyntheticSpec().key()
    digest = hashlib.sha256((text + spec_key).encode()).hexdigest()[:12]
    root = os.environ.get("D2KD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "d2kd")
    stem = os.path.splitext(os.path.basename(recipe))[0]
    return os.path.join(root, "teachers", f"{stem}-{spec_key}-{digest}")


def train_net(recipe: str, *args: str) -> None:
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "train_net.py"),
        "--config-file",
        os.path.join(ROOT, recipe),
        *args,
    ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def hardware(device: str) -> dict:
    """What the quickstart ran on, recorded beside its results."""
    import platform

    import torch

    cpu = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    return dict(
        cpu=cpu or platform.processor(),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        torch=torch.__version__,
        device=device,
        torch_threads=torch.get_num_threads(),
        gpu=torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
    )


def max_iter(recipe: str) -> int:
    from detectron2.config import LazyConfig

    return int(LazyConfig.load(os.path.join(ROOT, recipe)).train.max_iter)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def train_many(jobs, parallel: bool) -> None:
    """Run train_net jobs; in parallel with one thread each when asked (logs to their folders)."""
    if not parallel:
        for recipe, args in jobs:
            train_net(recipe, *args)
        return
    threads = str(max(1, (os.cpu_count() or 2) // len(jobs)))
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    procs = []
    for recipe, args in jobs:
        out = next(a.split("=", 1)[1] for a in args if a.startswith("train.output_dir="))
        os.makedirs(out, exist_ok=True)
        cmd = [
            sys.executable,
            os.path.join(ROOT, "tools", "train_net.py"),
            "--config-file",
            os.path.join(ROOT, recipe),
            *args,
        ]
        print("+", " ".join(cmd), f"> {out}/stdout.log", flush=True)
        log = open(os.path.join(out, "stdout.log"), "a")
        procs.append(
            (
                subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
                log,
                out,
            )
        )
    failed = []
    for proc, log, out in procs:
        proc.wait()
        log.close()
        if proc.returncode != 0:
            failed.append(out)
    if failed:
        sys.exit(
            f"[quickstart] training failed; see {', '.join(f + '/stdout.log' for f in failed)}"
        )


def read_ap(path: str) -> dict:
    with open(path) as f:
        return json.load(f)["bbox"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "quickstart"))
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
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
    if args.teacher_path:
        folder = args.teacher_dir or teacher_cache_dir(args.teacher_path)
        print(os.path.join(folder, "model_final.pth"))
        return
    device = [f"train.device={args.device}"] if args.device else []
    timings = {}
    t0 = time.time()

    teacher_dir = args.teacher_dir or teacher_cache_dir(TEACHER)
    teacher_ckpt = os.path.join(teacher_dir, "model_final.pth")
    if os.path.isfile(teacher_ckpt):
        print(f"[quickstart] reusing the cached teacher {teacher_ckpt}")
    else:
        print(
            f"[quickstart] training the teacher into {teacher_dir}: this runs once, "
            f"{max_iter(TEACHER)} iterations at batch 8, about 26 minutes on 2 idle CPU cores "
            "(measured: 0.62 s/iteration); interrupt and rerun to resume.",
            flush=True,
        )
        start = time.time()
        train_net(TEACHER, "--resume", f"train.output_dir={teacher_dir}", *device)
        timings["teacher_train_s"] = round(time.time() - start, 1)
        print(f"[quickstart] teacher trained in {timings['teacher_train_s'] / 60:.1f} min")
    teacher_eval = os.path.join(teacher_dir, "eval_final.json")
    if not os.path.isfile(teacher_eval):
        train_net(
            TEACHER,
            "--eval-only",
            f"train.init_checkpoint={teacher_ckpt}",
            f"train.output_dir={teacher_dir}",
            *device,
        )

    runs = {
        "baseline": (BASELINE, []),
        "distilled (MSE)": (DISTILL, [f"model.teacher.weights={teacher_ckpt}"]),
    }
    results = {"teacher R18-wide": read_ap(teacher_eval)}
    outs = {
        name: os.path.join(args.output, "baseline" if r == BASELINE else "mse")
        for name, (r, _) in runs.items()
    }
    start = time.time()
    # On a CPU the two students train side by side, one core each: on 2 cores that beats running
    # them one after the other with 2 threads each (thread scaling of small convs is poor).
    parallel = not str(args.device or ("cuda" if _cuda() else "cpu")).startswith("cuda")
    jobs = [
        (recipe, ["--resume", f"train.output_dir={outs[name]}", *extra, *device, *args.opts])
        for name, (recipe, extra) in runs.items()
    ]
    train_many(jobs, parallel=parallel)
    timings["students_s"] = round(time.time() - start, 1)
    for name in runs:
        results[f"student R18 {name}"] = read_ap(os.path.join(outs[name], "eval_last.json"))

    rows = ["| model | AP | AP50 | AP75 | APs | APm |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(
            f"| {name} | "
            + " | ".join(f"{r[k]:.1f}" for k in ("AP", "AP50", "AP75", "APs", "APm"))
            + " |"
        )
    timings["total_s"] = round(time.time() - t0, 1)
    table = "\n".join(rows)
    print(table)
    print("wall time (s):", json.dumps(timings))
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "results.json"), "w") as f:
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        schedule = {
            name: max_iter(r)
            for name, r in (("teacher", TEACHER), ("baseline", BASELINE), ("distilled", DISTILL))
        }
        json.dump(
            {
                "results": results,
                "timings_s": timings,
                "teacher": teacher_ckpt,
                "schedule_max_iter": schedule,
                "hardware": hardware(device),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            f,
            indent=2,
        )
    with open(os.path.join(args.output, "results.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
