"""Latency of students and teachers: onnxruntime vs PyTorch eager, interleaved and paired.

Protocol (shared/export-notes.md §4.4): every candidate (model x runtime x precision) is built
before timing and fed the same pre-allocated input; each candidate gets ``warmup`` untimed calls;
then ``runs`` rounds, each calling every candidate once in a freshly shuffled order (seeded), timed
with ``perf_counter_ns`` (:mod:`d2kd.utils.timing`). Interleaving makes slow periods of a shared
machine hit all candidates alike, so the per-round ratios of two candidates are paired samples:
we report their median with a bootstrap 95% CI (and the ratio of medians as a cross-check).
Absolute milliseconds drift 5-10% between runs on a shared VM; ratios from one run are the
result.

Caveat for random weights: scores sit at the prior, so detectron2's eager path has almost nothing
above the threshold to run NMS on, while the e2e ONNX graph always runs NMS over its top-k
candidates (zero-score ones included); this slightly favours eager in ORT/eager ratios.

The FLOP floor beside each latency is ``2 x GMAC / R``, with ``R`` this machine's fp32 GEMM rate
measured once per run (a short square matmul at the run's thread count): the time the model's
multiply-adds would take at matmul speed. Latency far above it points at overhead (small
convolutions, memory traffic, NMS), not at arithmetic.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..utils.files import atomic_write_text, read_json, write_json
from ..utils.hardware import hardware, hardware_line
from ..utils.timing import paired_ratio, summarize, time_interleaved

__all__ = [
    "Candidate",
    "count_flops",
    "gemm_gflops",
    "machine_info",
    "render_markdown",
    "plot_latency_vs_ap",
    "run_benchmark",
]


@dataclass
class Candidate:
    """One thing to time.

    Attributes:
        name: unique label, ``<model>/<runtime>-<precision>``.
        model: model label (``student``, ``teacher``, ...).
        runtime: ``ort-cpu``, ``ort-cuda`` or ``torch-eager``.
        precision: ``fp32`` or ``int8``.
        fn: a no-argument callable running one inference on the shared input.
        info: extra facts for the report (file, exporter, ...).
    """

    name: str
    model: str
    runtime: str
    precision: str
    fn: Callable[[], Any]
    info: Dict[str, Any] = field(default_factory=dict)


def count_flops(model: Any, image: Any) -> Dict[str, float]:
    """fvcore's multiply-add count and the parameters of one inference.

    Args:
        model: a detectron2 model in eval mode.
        image: (3, H, W) tensor.

    Returns:
        ``gmac`` (fvcore counts one fused multiply-add as one "flop": these are GMACs, half the
        GFLOPs) and ``params_m`` (millions). NMS and other uncounted ops are ignored by fvcore.
    """
    import torch
    from detectron2.utils.analysis import FlopCountAnalysis
    from fvcore.nn import parameter_count

    with torch.no_grad():
        fca = FlopCountAnalysis(model, [{"image": image}])
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = fca.total()
    return {"gmac": total / 1e9, "params_m": parameter_count(model)[""] / 1e6}


def gemm_gflops(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """This machine's fp32 matmul rate in GFLOP/s at ``threads`` torch threads.

    The best of ``repeats`` timed ``n x n`` matmuls (after one warm-up), so a busy moment on a
    shared machine lowers it less than a median would; ``2 n^3`` flops each.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen)
        b = torch.randn(n, n, generator=gen)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 2 * n**3 / best / 1e9


def machine_info(threads: int, gemm: Optional[float] = None) -> Dict[str, Any]:
    """The shared hardware record plus what matters here: ORT, threads, the GEMM rate."""
    import onnxruntime

    info = hardware("cpu")
    info.update(
        threads=threads,
        onnxruntime=onnxruntime.__version__,
        ort_providers=onnxruntime.get_available_providers(),
        gemm_gflops=gemm,
    )
    return info


def render_markdown(result: Dict[str, Any]) -> str:
    """A markdown report: machine, per-candidate latency table, ratio table."""
    m = result["machine"]
    h, w = result["size"]
    flags = ", ".join(k for k, v in (m.get("cpu_flags") or {}).items() if v) or "no flags read"
    gemm = m.get("gemm_gflops")
    lines = [
        f"# Latency: {h}x{w}, batch 1, {m['threads']} threads",
        "",
        f"{hardware_line(m, threads=False)}; {flags}; onnxruntime {m['onnxruntime']}; "
        f"{result['runs']} interleaved rounds after {result['warmup']} warm-up calls; graph: "
        "e2e (decode + NMS included).",
        "",
        "| candidate | p50 ms | p90 ms | p99 ms | FLOP floor ms | GMAC (fvcore) | params (M) "
        "| AP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c in result["candidates"].items():
        mod = result["models"][c["model"]]
        ap = mod.get("ap")
        floor = mod.get("flop_floor_ms")
        lines.append(
            f"| {name} | {c['p50_ms']:.1f} | {c['p90_ms']:.1f} | {c['p99_ms']:.1f} | "
            f"{'' if floor is None else f'{floor:.1f}'} | {mod['gmac']:.2f} | "
            f"{mod['params_m']:.2f} | {'' if ap is None else f'{ap:.2f}'} |"
        )
    lines += [
        "",
        (
            f"FLOP floor: 2 x GMAC / {gemm:.1f} GFLOP/s, the fp32 matmul rate measured in this run "
            f"at {m['threads']} threads (int8 rows use the same fp32 floor)."
            if gemm
            else "FLOP floor: not measured."
        ),
        "",
        "| ratio (per-round, median) | value | 95% CI | ratio of medians |",
        "|---|---|---|---|",
    ]
    for name, r in result["ratios"].items():
        flag = " (unstable)" if r["unstable"] else ""
        lines.append(
            f"| {name} | {r['median']:.3f}{flag} | {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f} | "
            f"{r['ratio_of_medians']:.3f} |"
        )
    lines += [
        "",
        "Ratios > 1 mean the second-named candidate is faster. Compare ratios within one run;",
        "absolute milliseconds drift between runs on a shared machine.",
    ]
    return "\n".join(lines) + "\n"


def plot_latency_vs_ap(result: Dict[str, Any], path: str) -> Optional[str]:
    """Scatter of p50 latency (ms) vs AP per model and runtime; None when no AP is known."""
    points = []
    for name, c in result["candidates"].items():
        ap = result["models"][c["model"]].get("ap")
        if ap is not None:
            points.append((name, c["p50_ms"], ap, c["runtime"] + "-" + c["precision"]))
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    markers = {}
    for name, ms, ap, kind in points:
        marker = markers.setdefault(kind, "osD^vP*"[len(markers) % 7])
        ax.scatter(
            ms,
            ap,
            marker=marker,
            label=kind if kind not in ax.get_legend_handles_labels()[1] else None,
        )
        ax.annotate(
            name.split("/")[0], (ms, ap), textcoords="offset points", xytext=(4, 4), fontsize=8
        )
    h, w = result["size"]
    ax.set_xlabel(f"p50 latency, ms ({h}x{w}, {result['machine']['threads']} threads)")
    ax.set_ylabel("AP")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run_benchmark(
    config_files: Sequence[str],
    out_dir: str,
    checkpoints: Sequence[Optional[str]] = (),
    onnx_files: Sequence[Optional[str]] = (),
    labels: Sequence[str] = (),
    threads: int = 2,
    runs: int = 30,
    warmup: int = 3,
    size: Sequence[int] = (512, 512),
    int8: bool = False,
    eager: bool = True,
    cuda: bool = False,
    ap: Optional[Dict[str, float]] = None,
    exporter: str = "auto",
    seed: int = 0,
) -> Dict[str, Any]:
    """Build, export (unless given) and time every model; write JSON, markdown and a plot.

    Args:
        config_files: the student recipe first, then teachers; each model is the recipe's
            student node (``cfg.model`` for a plain recipe).
        out_dir: where ``latency.json``, ``latency.md``, ``latency.png`` (and exported graphs)
            go.
        checkpoints: per config, a checkpoint (d2kd or stock ``{"model": ...}``) or None for
            random weights (fine for latency).
        onnx_files: per config, an existing e2e graph or None to export one here.
        labels: per config; default ``student``, ``teacher`` (``teacher2``, ...).
        threads: intra-op threads for ORT and ``torch.set_num_threads``.
        runs, warmup: timed rounds and untimed calls per candidate.
        size: (H, W) of the random input image.
        int8: also time a static-int8 copy of each graph.
        eager: also time PyTorch eager (the stock detectron2 forward).
        cuda: use onnxruntime's CUDA provider when it is available.
        ap: ``{label: AP}``; otherwise read from an export ``report.json`` next to the graph.
        exporter: for graphs exported here.
        seed: input and round-order seed.

    Returns:
        The result dict (also written as ``latency.json``).
    """
    import torch

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(config_files, out_dir, checkpoints, onnx_files, labels, threads, runs, warmup,
                    size, int8, eager, cuda, ap, exporter, seed)  # fmt: skip
    finally:
        torch.set_num_threads(old_threads)


def _run(config_files, out_dir, checkpoints, onnx_files, labels, threads, runs, warmup, size,
         int8, eager, cuda, ap, exporter, seed) -> Dict[str, Any]:  # fmt: skip
    """The body of :func:`run_benchmark` (arguments as there)."""
    import torch

    from .onnx_export import export_onnx
    from .quantize import quantize_int8
    from .parity import make_session
    from .pipeline import load_recipe
    from .strip import build_student, load_checkpoint, strip_checkpoint

    os.makedirs(out_dir, exist_ok=True)
    gemm = gemm_gflops(threads)  # once, before the models load the machine's caches
    h, w = int(size[0]), int(size[1])
    gen = torch.Generator().manual_seed(seed)
    image = (torch.rand(3, h, w, generator=gen) * 255).round()
    batch = image[None].numpy().copy()
    default_labels = ["student"] + [
        "teacher" if i == 1 else f"teacher{i}" for i in range(1, len(config_files))
    ]
    labels = list(labels) or default_labels
    ap = dict(ap or {})
    candidates: List[Candidate] = []
    models: Dict[str, Dict[str, Any]] = {}
    for i, cfg_file in enumerate(config_files):
        label = labels[i]
        ckpt = checkpoints[i] if i < len(checkpoints) else None
        onnx_path = onnx_files[i] if i < len(onnx_files) else None
        cfg = load_recipe(cfg_file)
        state = None
        if ckpt:
            state = strip_checkpoint(load_checkpoint(ckpt, allow_foreign=True), ckpt)
        model = build_student(cfg, state, ckpt or "<random>")
        info = {
            "config": cfg_file,
            "checkpoint": ckpt or "random weights",
            "class": type(model).__name__,
        }
        info.update(count_flops(model, image))
        info["flop_floor_ms"] = 2 * info["gmac"] / gemm * 1e3
        if not onnx_path:
            onnx_path = os.path.join(out_dir, f"{label}_e2e.onnx")
            paths = {"e2e": onnx_path, "raw": os.path.join(out_dir, f"{label}_raw.onnx")}
            export_onnx(model, image[None], paths, exporter=exporter)
        elif label not in ap:
            report = os.path.join(os.path.dirname(os.path.abspath(onnx_path)), "report.json")
            if os.path.isfile(report):
                fp32 = read_json(report).get("variants", {}).get("fp32", {})
                if (fp32.get("ap") or {}).get("AP") is not None:
                    ap[label] = float(fp32["ap"]["AP"])
        info["onnx"] = onnx_path
        info["ap"] = ap.get(label)
        models[label] = info
        sess = make_session(onnx_path, threads, cuda=cuda)
        rt = "ort-cuda" if "CUDAExecutionProvider" in sess.get_providers() else "ort-cpu"
        candidates.append(Candidate(f"{label}/{rt}-fp32", label, rt, "fp32",
                                    _ort_fn(sess, batch), {"file": onnx_path}))  # fmt: skip
        if int8:
            q = os.path.join(out_dir, f"{label}_e2e_int8.onnx")
            calib = [batch] + [
                (torch.rand(1, 3, h, w, generator=gen) * 255).numpy() for _ in range(3)
            ]
            quantize_int8(onnx_path, q, calib)
            qs = make_session(q, threads, cuda=cuda)
            candidates.append(Candidate(f"{label}/{rt}-int8", label, rt, "int8",
                                        _ort_fn(qs, batch), {"file": q}))  # fmt: skip
        if eager:
            candidates.append(Candidate(f"{label}/torch-eager-fp32", label, "torch-eager",
                                        "fp32", _torch_fn(model, image)))  # fmt: skip
    times = time_interleaved({c.name: c.fn for c in candidates}, runs, warmup, seed)
    result: Dict[str, Any] = {
        "size": [h, w],
        "runs": runs,
        "warmup": warmup,
        "machine": machine_info(threads, gemm),
        "models": models,
        "candidates": {
            c.name: dict(
                summarize(times[c.name]),
                model=c.model,
                runtime=c.runtime,
                precision=c.precision,
                **c.info,
            )  # fmt: skip
            for c in candidates
        },
        "ratios": _ratios(candidates, times, labels[0]),
        "raw_seconds": {k: v.tolist() for k, v in times.items()},
    }
    write_json(result, os.path.join(out_dir, "latency.json"))
    atomic_write_text(os.path.join(out_dir, "latency.md"), render_markdown(result))
    result["plot"] = plot_latency_vs_ap(result, os.path.join(out_dir, "latency.png"))
    return result


def _ort_fn(session: Any, batch: np.ndarray) -> Callable[[], Any]:
    feed = {"image": batch}
    return lambda: session.run(None, feed)


def _torch_fn(model: Any, image: Any) -> Callable[[], Any]:
    import torch

    inputs = [{"image": image}]

    def run() -> Any:
        with torch.no_grad():
            return model(inputs)

    return run


def _ratios(
    candidates: Sequence[Candidate], times: Dict[str, np.ndarray], student: str
) -> Dict[str, Dict[str, Any]]:
    """Teacher/student per runtime, eager/ORT and int8/fp32 per model (> 1: second is faster)."""
    by = {(c.model, c.runtime, c.precision): c.name for c in candidates}
    out = {}
    for (model, rt, prec), name in by.items():
        if model != student and (student, rt, prec) in by:
            out[f"{name} / {by[(student, rt, prec)]}"] = paired_ratio(
                times[name], times[by[(student, rt, prec)]]
            )
        if rt == "torch-eager":
            for ort_rt in ("ort-cpu", "ort-cuda"):
                if (model, ort_rt, "fp32") in by:
                    ort = by[(model, ort_rt, "fp32")]
                    out[f"{name} / {ort}"] = paired_ratio(times[name], times[ort])
        if prec == "int8":
            fp32 = by[(model, rt, "fp32")]
            out[f"{fp32} / {name}"] = paired_ratio(times[fp32], times[name])
    return out
