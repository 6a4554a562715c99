"""Helpers shared by the benchmark runners: the method registry, hardware, timing, JSON.

Every runner records the machine it ran on (:func:`hardware`) next to its numbers, so a table
rendered from the JSON (``benchmarks/render_tables.py``) always says where it was measured.
"""

import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "benchmarks" / "results"

# The teacher of the synthetic distillation recipes (shared with tools/quickstart.py's cache), and
# the two-stage one of the heterogeneous (HEAD) rows.
TEACHER_RECIPE = "configs/quickstart/retinanet_R18w_teacher.py"
FASTER_RCNN_TEACHER_RECIPE = "configs/quickstart/faster_rcnn_R18w_teacher.py"
# The tiny test recipes (64 px, seconds per step) used by --smoke / --quick.
TINY_TEACHER = "tests/configs/tiny_plain.py"
TINY_MSE = "tests/configs/tiny_distill.py"
TINY_FGD = "tests/configs/tiny_fgd.py"
COCO_RETINANET = "configs/fgd/retinanet_R50_from_R101_coco_2x.py"
COCO_FASTER_RCNN = "configs/fgd/faster_rcnn_R50_from_R101_coco_2x.py"


@dataclass(frozen=True)
class Method:
    """One row of the benchmarks: a recipe at the synthetic scale and its stand-ins.

    Attributes:
        recipe: the synthetic-scale recipe (repo-relative); a missing file means "not implemented
            yet" and the runners skip the method.
        overrides: extra ``key=value`` overrides for tools/train_net.py.
        smoke: the tiny recipe used by ``--smoke`` / ``--quick`` (None: no smoke run).
        coco: (label, recipe) pairs measured by ``train_overhead.py --coco-shapes``.
        coco_terms: when set, the COCO recipe's KD terms are replaced by this term of
            ``d2kd.distill`` built on FPN P3-P7 (e.g. "FeatureMSETerm": MSE has no COCO recipe).
        issue: where the slot is filled (for the "not implemented yet" message).
        teacher: the recipe of the teacher this method distils from (trained and cached once,
            shared by every method that names it; the gap closed is measured against it).
        prepare: a command (argv after the python executable, repo-relative) run once per seed
            before training, e.g. offline adversarial generation; ``{teacher}`` is replaced by
            the teacher checkpoint, ``{run_dir}`` by the run folder and ``{seed}`` by the seed.
            It must be restartable (it is rerun after an interruption).
        prepare_overrides: ``key=value`` overrides added when ``prepare`` ran (same placeholders).
    """

    recipe: str
    overrides: Tuple[str, ...] = ()
    smoke: Optional[str] = None
    coco: Tuple[Tuple[str, str], ...] = ()
    coco_terms: Optional[str] = None
    issue: str = ""
    teacher: str = TEACHER_RECIPE
    prepare: Tuple[str, ...] = ()
    prepare_overrides: Tuple[str, ...] = ()

    def implemented(self) -> bool:
        return (ROOT / self.recipe).is_file()


# The methods every runner knows, in table order. Later issues fill the marked slots by adding the
# recipe file named here (or editing the row); until then the runners report them and skip them.
METHODS: Dict[str, Method] = {
    "baseline": Method("configs/quickstart/retinanet_R18_baseline.py", smoke=TINY_TEACHER),
    "mse": Method(
        "configs/quickstart/mse_R18_from_R18w.py",
        smoke=TINY_MSE,
        coco=(("RetinaNet R50 <- R101", COCO_RETINANET),),
        coco_terms="FeatureMSETerm",
    ),
    "fgd": Method(
        "configs/fgd/retinanet_R18_from_R18w_synth.py",
        smoke=TINY_FGD,
        coco=(
            ("RetinaNet R50 <- R101", COCO_RETINANET),
            ("Faster R-CNN R50 <- R101", COCO_FASTER_RCNN),
        ),
    ),
    "lshfm_lshl2": Method(
        "configs/lshfm/retinanet_R18_from_R18w_synth_lshl2.py",
        smoke="tests/configs/tiny_lshfm_retinanet.py",
        issue="LSHFM",
    ),
    "lshfm_l2": Method("configs/lshfm/retinanet_R18_from_R18w_synth_l2.py", issue="LSHFM"),
    "lshfm_lsh": Method("configs/lshfm/retinanet_R18_from_R18w_synth_lsh.py", issue="LSHFM"),
    # HEAD's rows distil the two-stage teacher into the same RetinaNet student (the assist row
    # trains the assistant alone, teacher-free, as the paper's ablation; its gap is measured
    # against the Faster R-CNN teacher too).
    "head_assist": Method(
        "configs/head/retinanet_R18_from_R18w_synth_assist.py",
        issue="HEAD",
        teacher=FASTER_RCNN_TEACHER_RECIPE,
    ),
    "head_akd": Method(
        "configs/head/retinanet_R18_from_R18w_synth_akd.py",
        issue="HEAD",
        teacher=FASTER_RCNN_TEACHER_RECIPE,
    ),
    "head_akd_ckd": Method(
        "configs/head/retinanet_R18_from_R18w_synth_akd_ckd.py",
        issue="HEAD",
        teacher=FASTER_RCNN_TEACHER_RECIPE,
    ),
    "tf_head": Method(
        "configs/head/retinanet_R18_tf_head_synth.py",
        issue="TF-HEAD",
        teacher=FASTER_RCNN_TEACHER_RECIPE,
    ),
    # IKD offline: the adversarial copy of synth_train is made once per teacher (restartable; the
    # seeds share it), then the run reads it; online makes its pairs during training.
    "ikd_offline": Method(
        "configs/ikd/retinanet_R18_from_R18w_synth_offline.py",
        issue="IKD",
        prepare=(
            "tools/gen_adversarial.py",
            "--config-file",
            "configs/ikd/retinanet_R18_from_R18w_synth_offline.py",
            "--batch-size",
            "8",
            "model.teacher.weights={teacher}",
        ),
    ),
    "ikd_online": Method(
        "configs/ikd/retinanet_R18_from_R18w_synth_online.py",
        smoke="tests/configs/tiny_ikd.py",
        issue="IKD",
    ),
    # DFAD: the student never sees a training image; dfad_real is the same loss on real images.
    "dfad": Method("configs/dfad/retinanet_R18_from_R18w_synth.py", issue="DFAD"),
    "dfad_real": Method("configs/dfad/retinanet_R18_from_R18w_synth_real.py", issue="DFAD"),
}


def select_methods(names: Optional[Sequence[str]], owner: str) -> List[str]:
    """Validate ``--methods`` names against :data:`METHODS` (None: all, in registry order).

    Raises:
        SystemExit: naming the unknown method and the known ones.
    """
    if not names:
        return list(METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SystemExit(f"[{owner}] unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def not_implemented_note(name: str) -> str:
    m = METHODS[name]
    return (
        f"{name}: not implemented yet ({m.recipe} missing{'; issue ' + m.issue if m.issue else ''})"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str = "cpu") -> Dict[str, Any]:
    """The machine and software a measurement ran on (recorded in every result JSON)."""
    import torch

    info: Dict[str, Any] = dict(
        platform=platform.platform(),
        machine=platform.machine(),
        cpu=_cpu_model(),
        cpu_count=os.cpu_count(),
        torch=torch.__version__,
        python=platform.python_version(),
        device=device,
        torch_threads=torch.get_num_threads(),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
    )
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def hardware_line(hw: Optional[Dict[str, Any]]) -> str:
    """One human line for a :func:`hardware` dict (used in table captions)."""
    if not hw:
        return "hardware not recorded"
    where = hw.get("gpu") or f"{hw.get('cpu', hw.get('machine', '?'))}, {hw.get('cpu_count')} cores"
    threads = hw.get("torch_threads", hw.get("threads"))
    return (
        f"{hw.get('device', 'cpu')} ({where}"
        + (f", {threads} torch threads" if threads else "")
        + f"), torch {hw.get('torch', '?')}"
    )


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def clean_nan(obj: Any) -> Any:
    """NaN/Inf -> None, recursively, so the JSON is strict (COCO gives NaN for empty areas)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_nan(v) for v in obj]
    return obj


def write_json(data: Dict[str, Any], path: os.PathLike) -> Path:
    """Write strict JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean_nan(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: os.PathLike) -> Dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> float:
    """Seconds ``fn()`` takes, with the GPU synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(
    fns: Dict[str, Callable[[], Any]], repeats: int, device: str, warmup: int = 1
) -> Dict[str, List[float]]:
    """Time several functions side by side: each repeat runs all of them, in a rotated order.

    Interleaving spreads slow drift (thermal, other processes) evenly over the contenders, so
    their ratios hold even when absolute times wander.

    Returns:
        name -> list of ``repeats`` durations in seconds.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(timed(fns[name], device))
    return times


def summary(values: Sequence[float]) -> Dict[str, float]:
    """Median, min and max of timings (seconds)."""
    return dict(median=statistics.median(values), min=min(values), max=max(values), n=len(values))
