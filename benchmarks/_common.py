"""The benchmark runners' one helper module: their methods, how they record paths, their tables.

Benchmark-only, so it lives here rather than in ``d2kd/``; the runners (``accuracy_suite.py``,
``train_overhead.py``, ``loss_cost.py``, ``render_tables.py``) import it and the library, never
each other. What they share with the rest of d2kd (files, hardware, timing, child runs, the
teacher cache) comes from :mod:`d2kd.utils`.

Methods are read from the recipes: a recipe joins the benchmarks by declaring, at module level,

    __benchmark__ = dict(name="fgd", order=20, smoke="tests/configs/tiny_fgd.py")

(a literal dict, read with :mod:`ast` without running the recipe; a name starting with "_" is
not part of the LazyConfig, so the declaration changes nothing the recipe trains). Paths are
relative to the repository, or, starting with ".", to the recipe's folder (as its imports are).
See :data:`FIELDS` for the keys and ``benchmarks/README.md`` for the orders in use.
"""

import ast
import os
import posixpath
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from d2kd.utils.hardware import hardware_line  # noqa: E402
from d2kd.utils.teacher_cache import cache_root  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"
# The teacher of the synthetic distillation recipes (cached once, shared with tools/quickstart.py)
# and its tiny stand-in for --smoke / --quick runs.
MAIN_TEACHER = "configs/quickstart/retinanet_R18w_teacher.py"
TINY_TEACHER = "tests/configs/tiny_plain.py"

DECLARATION = "__benchmark__"
# Declaration keys: name -> (type, meaning). Only "name" is required.
FIELDS: Dict[str, Tuple[Any, str]] = {
    "name": (str, "the row's name in every benchmark table (unique)"),
    "order": ((int, float), "the rows' sort key, default 1000: after the declared ones"),
    "smoke": (str, "the tiny test recipe --smoke / --quick run instead; none: not smoke-run"),
    "teacher": (str, f"the recipe of the teacher it distils from, default {MAIN_TEACHER}"),
    "overrides": (list, "extra key=value overrides of its training runs"),
    "prepare": (list, "argv after python, run once per seed before training; restartable"),
    "prepare_overrides": (list, "key=value overrides added to its runs after `prepare`"),
    "coco": (dict, "label -> COCO-scale recipe timed by train_overhead.py --coco-shapes"),
    "coco_terms": (str, "dotted KD term class replacing the COCO recipe's terms on P3-P7"),
}


@dataclass(frozen=True)
class Method:
    """One row of the benchmarks, as its recipe declares it (see :data:`FIELDS`).

    ``prepare`` and ``prepare_overrides`` may use ``{recipe}`` (this recipe), ``{teacher}`` (the
    teacher checkpoint), ``{run_dir}`` and ``{seed}``.
    """

    name: str
    recipe: str
    order: float = 1000
    smoke: Optional[str] = None
    teacher: str = MAIN_TEACHER
    overrides: Tuple[str, ...] = ()
    prepare: Tuple[str, ...] = ()
    prepare_overrides: Tuple[str, ...] = ()
    coco: Tuple[Tuple[str, str], ...] = ()
    coco_terms: Optional[str] = None


def _literal(node: ast.expr) -> Any:
    """``ast.literal_eval``, also of ``dict(key=literal, ...)`` (the recipes' usual spelling)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        if node.args or any(kw.arg is None for kw in node.keywords):
            raise ValueError("dict() with positional or ** arguments")
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    return ast.literal_eval(node)


def read_declaration(path: Path) -> Optional[Dict[str, Any]]:
    """The recipe's ``__benchmark__`` dict, or None when it declares none.

    Raises:
        ValueError: the value is not a literal dict (the message names the file).
    """
    tree = ast.parse(Path(path).read_text(), str(path))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == DECLARATION for t in targets):
            try:
                value = _literal(node.value)
            except ValueError as e:
                raise ValueError(
                    f"[benchmarks] {path}:{node.lineno}: {DECLARATION} must be a literal dict "
                    "(dict(...) or {...} of strings, numbers, lists and dicts)"
                ) from e
            if not isinstance(value, dict):
                raise ValueError(
                    f"[benchmarks] {path}:{node.lineno}: {DECLARATION} must be a dict, got "
                    f"{type(value).__name__}"
                )
            return value
    return None


def method_from_declaration(recipe: str, decl: Dict[str, Any], root: Path = ROOT) -> Method:
    """Validate a declaration of ``recipe`` (repo-relative) and build its :class:`Method`.

    Raises:
        ValueError: naming the recipe and the key that is unknown, missing, mistyped, or names
            a file that does not exist.
    """
    where = f"[benchmarks] {recipe}: {DECLARATION}"
    unknown = sorted(set(decl) - set(FIELDS))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; known: {', '.join(FIELDS)}")
    if "name" not in decl:
        raise ValueError(f"{where} needs a 'name'")
    for key, value in decl.items():
        kind, meaning = FIELDS[key]
        items = (
            value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        )
        if (
            not isinstance(value, kind)
            or isinstance(value, bool)
            or not all(isinstance(v, str) for v in items)
        ):
            names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            of_str = " of strings" if kind in (list, dict) else ""
            raise ValueError(
                f"{where}['{key}'] must be a {names}{of_str} ({meaning}); got {value!r}"
            )

    def path(value: str) -> str:  # "./x.py", "../y/x.py": from the recipe's folder, as imports
        if not value.startswith("."):
            return value
        return posixpath.normpath(posixpath.join(posixpath.dirname(recipe), value))

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in decl.items() if k != "coco"}
    fields.update({k: path(fields[k]) for k in ("smoke", "teacher") if k in fields})
    coco = tuple((str(k), path(v)) for k, v in decl.get("coco", {}).items())
    files = [(k, fields.get(k)) for k in ("smoke", "teacher")]
    files += [(f"coco['{label}']", p) for label, p in coco]
    for key, p in files:
        if p is not None and not (root / p).is_file():
            raise ValueError(f"{where}['{key}'] names {p}, which does not exist")
    return Method(recipe=recipe, coco=coco, **fields)


def discover_methods(root: Path = ROOT) -> Dict[str, Method]:
    """Every method declared by a recipe under ``root/configs``, sorted by (order, name).

    Raises:
        ValueError: a declaration is malformed, or two recipes declare the same name.
    """
    found: Dict[str, Method] = {}
    for path in sorted((root / "configs").rglob("*.py")):
        decl = read_declaration(path)
        if decl is None:
            continue
        method = method_from_declaration(path.relative_to(root).as_posix(), decl, root)
        if method.name in found:
            raise ValueError(
                f"[benchmarks] {found[method.name].recipe} and {method.recipe} both declare the "
                f"method '{method.name}'"
            )
        found[method.name] = method
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


METHODS: Dict[str, Method] = discover_methods()


def select_methods(names: Optional[Sequence[str]], owner: str) -> List[str]:
    """Validate ``--methods`` names against :data:`METHODS` (None: all, in table order).

    Raises:
        SystemExit: naming the unknown method and the known ones.
    """
    if not names:
        return list(METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SystemExit(f"[{owner}] unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def portable_path(path: os.PathLike) -> str:
    """A path as the result JSON records it: relative to the repository when inside it, else
    ``$D2KD_CACHE/...`` when inside the cache root, else absolute (e.g. an ``--out`` in /tmp)."""
    p = Path(os.path.abspath(path))
    for base, prefix in ((ROOT, ""), (Path(os.path.abspath(cache_root())), "$D2KD_CACHE/")):
        try:
            return prefix + p.relative_to(base).as_posix()
        except ValueError:
            continue
    return str(p)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ------------------------------------------------------------------------------------------ tables
# Each takes a result JSON (and optionally the rows to keep) and returns a caption and a markdown
# table; render_tables.py writes them into the READMEs, the runners print them.
METRICS = ("AP", "AP50", "APs", "APm")


def _hw(data: Dict[str, Any]) -> str:
    return hardware_line(data.get("hardware"))


def _hw_no_threads(data: Dict[str, Any]) -> str:
    """The hardware line without thread counts: runs of one table may use different ones, and
    they change the time, not the accuracy."""
    return hardware_line(data.get("hardware"), threads=False)


def _f(value: Optional[float], fmt: str = ".1f") -> str:
    return "—" if value is None else format(value, fmt)


def _pm(stat: Optional[Dict[str, Any]]) -> str:
    """ "mean ± std" of a metric summary (std omitted for a single run)."""
    if not stat or stat.get("mean") is None:
        return "—"
    if stat.get("std") is None:
        return f"{stat['mean']:.1f}"
    return f"{stat['mean']:.1f} ± {stat['std']:.1f}"


def _date(data: Dict[str, Any]) -> str:
    return str(data.get("finished") or data.get("created") or "")[:10]


def accuracy_table(
    data: Dict[str, Any],
    only: Optional[Sequence[str]] = None,
    declared: Sequence[str] = (),
) -> str:
    """Teachers, baseline and each method: AP metrics mean ± std over seeds, gain, gap closed.
    Methods in ``declared`` (the recipes' rows) without results are named as not run yet."""
    sched = data.get("schedule", {})
    methods = {
        name: m
        for name, m in data.get("methods", {}).items()
        if not only or name in only or name == "baseline"
    }
    teachers = data.get("teachers") or {data.get("teacher", {}).get("recipe", "?"): data["teacher"]}
    main = next(iter(teachers))
    used = [
        t for t in teachers if t == main or any(m.get("teacher") == t for m in methods.values())
    ]
    if only:  # a project's table: only the teachers its methods distil from
        used = [t for t in used if any(m.get("teacher", main) == t for m in methods.values())]
    seeds = ",".join(str(s) for s in data.get("seeds", []))
    rows = [
        "| model | iters | seeds | " + " | ".join(METRICS) + " | ΔAP vs baseline | gap closed |",
        "|---|---|---|" + "---|" * len(METRICS) + "---|---|",
    ]
    for key in used:
        t = teachers[key]
        tm = t.get("metrics") or {}
        rows.append(
            f"| teacher ({Path(t.get('recipe', key)).stem}) | {t.get('max_iter', '—')} | — | "
            + " | ".join(_f(tm.get(k)) for k in METRICS)
            + " | — | — |"
        )
    for name, m in methods.items():
        gain, gap = m.get("gain_AP"), m.get("gap_closed")
        rows.append(
            f"| {name} | {m.get('max_iter', '—')} | {m.get('n', 0)} | "
            + " | ".join(_pm(m.get("metrics", {}).get(k)) for k in METRICS)
            + f" | {'—' if name == 'baseline' else _f(gain, '+.1f')}"
            + f" | {'—' if name == 'baseline' or gap is None else format(gap, '.0%')} |"
        )
    skipped = data.get("skipped", data.get("not_implemented", {}))  # older files: not_implemented
    missing = [n for n in skipped if not only or n in only]
    missing += [n for n in only or () if n not in methods and n not in missing]
    if not only:
        missing += [n for n in declared if n not in methods and n not in missing]
    caption = (
        f"_Box AP on the synthetic val split ({'smoke run, ' if data.get('smoke') else ''}"
        f"schedule x{sched.get('scale', 1):g}; iterations as listed, at batch 8 except DFAD's "
        "(see its README); "
        f"seeds {seeds or '—'}; mean ± std over seeds; gap closed = "
        f"(AP − AP_baseline) / (AP_teacher − AP_baseline), against the teacher the method "
        f"distils from{' (the Faster R-CNN one for head rows)' if len(used) > 1 else ''}). "
        f"{_hw_no_threads(data)}; {_date(data)}._"
    )
    note = f"\n\nNot run yet: {', '.join(missing)}." if missing else ""
    return caption + "\n\n" + "\n".join(rows) + note


def train_overhead_table(data: Dict[str, Any], only: Optional[Sequence[str]] = None) -> str:
    """Seconds per iteration: student alone, teacher forward, full KD step, and their ratio."""
    rows = [
        "| method | setting | student step s | teacher fwd s | KD step s "
        "| KD / (student + teacher) | peak mem MB (student / teacher / KD) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data.get("rows", []):
        if only and r["method"] not in only:
            continue
        mem = r.get("memory") or {}
        mem_s = " / ".join(_f(mem.get(k), ".0f") for k in ("student", "teacher", "kd"))
        rows.append(
            f"| {r['method']} | {r['setting']} | {r['student_s']:.3f} | {r['teacher_s']:.3f} | "
            f"{r['kd_s']:.3f} | {r['ratio']:.2f} | {mem_s if mem else '—'} |"
        )
    caption = (
        f"_Medians of {data.get('repeats', '?')} interleaved repeats"
        f"{' (quick run)' if data.get('quick') else ''}; target ratio ≤ "
        f"{data.get('target_ratio', 1.10):.2f}; "
        f"memory: {data.get('memory_method') or 'not measured'}. "
        f"{_hw(data)}; {_date(data)}._"
    )
    return caption + "\n\n" + "\n".join(rows)


def loss_cost_table(data: Dict[str, Any], only: Optional[Sequence[str]] = None) -> str:
    """Forward and backward time of each KD loss on FPN maps."""
    sh = data.get("shapes", {})
    rows = ["| KD loss | forward ms | backward ms | forward + backward ms |", "|---|---|---|---|"]
    for r in data.get("rows", []):
        if only and r["term"] not in only:
            continue
        rows.append(
            f"| {r['term']} | {r['forward_ms']:.1f} | {r['backward_ms']:.1f} | "
            f"{r['total_ms']:.1f} |"
        )
    caption = (
        f"_Batch {len(sh.get('image_sizes', []))}, {sh.get('levels', ['?'])[0]}–"
        f"{sh.get('levels', ['?'])[-1]} of {sh.get('image_sizes', [['?']])[0]} padded to "
        f"{sh.get('padded_hw')}, C = {sh.get('channels')}, {sh.get('boxes_per_image')} GT boxes "
        f"per image; medians of {data.get('repeats', '?')} interleaved repeats"
        f"{' (quick run)' if data.get('quick') else ''}. {_hw(data)}; {_date(data)}._"
    )
    return caption + "\n\n" + "\n".join(rows)


def quickstart_table(data: Dict[str, Any], only: Optional[Sequence[str]] = None) -> str:
    """The quickstart's teacher / baseline / distilled table (tools/quickstart.py results.json)."""
    keys = ("AP", "AP50", "AP75", "APs", "APm")
    rows = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, r in data.get("results", {}).items():
        rows.append(f"| {name} | " + " | ".join(_f(r.get(k)) for k in keys) + " |")
    timings = data.get("timings_s") or {}
    wall = ", ".join(f"{k.removesuffix('_s')} {v / 60:.0f} min" for k, v in timings.items())
    sched = data.get("schedule_max_iter") or {}
    sched_txt = ", ".join(f"{k} {v} it" for k, v in sched.items())
    caption = (
        "_Synthetic val split; `make quickstart` with the recipes' schedules"
        + (f" ({sched_txt} at batch 8)" if sched_txt else "")
        + f". {_hw(data)}"
        + (f"; wall time: {wall}" if wall else "")
        + "._"
    )
    return caption + "\n\n" + "\n".join(rows)


def teacher_ablation_table(data: Dict[str, Any], only: Optional[Sequence[str]] = None) -> str:
    """Short teacher trainings, one change per row against the base recipe
    (``benchmarks/teacher_ablation.py``): AP metrics and the AP gain over the ``base`` row."""
    rows_in = data.get("rows", {})
    base = ((rows_in.get("base") or {}).get("metrics") or {}).get("AP")
    rows = [
        "| row | change | overrides | " + " | ".join(METRICS) + " | ΔAP vs base |",
        "|---|---|---|" + "---|" * len(METRICS) + "---|",
    ]
    for name, r in rows_in.items():
        if only and name not in only:
            continue
        m = r.get("metrics") or {}
        ap = m.get("AP")
        delta = "—" if name == "base" or ap is None or base is None else f"{ap - base:+.1f}"
        change = str(r.get("change", "")).replace("|", "\\|")
        overrides = " ".join(f"`{o}`" for o in r.get("overrides", ())) or "—"
        rows.append(
            f"| {name} | {change} | {overrides} | "
            + " | ".join(_f(m.get(k)) for k in METRICS)
            + f" | {delta} |"
        )
    caption = (
        f"_Box AP on the synthetic val split after {data.get('iters', '?')} iterations at batch "
        f"{data.get('batch', '?')} from scratch, each row one change to "
        f"`{data.get('recipe', '?')}` (rerun a row: `python benchmarks/teacher_ablation.py "
        f"--rows NAME`, which passes the overrides to tools/train_net.py). "
        f"{_hw_no_threads(data)}; {_date(data)}._"
    )
    return caption + "\n\n" + "\n".join(rows)


def coco_scale_table(data: Dict[str, Any], only: Optional[Sequence[str]] = None) -> str:
    """Each COCO/VOC recipe's 2-step check at its real input size (``coco_scale_check.py``)."""
    rows = [
        "| recipe | status | input: train / test (short ≤max) | batch (recipe's) | wall s "
        "| s/iter | peak RSS GiB | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data.get("rows", []):
        if only and r["recipe"] not in only:
            continue
        notes = "; ".join([*(r.get("notes") or []), *([r["error"]] if r.get("error") else [])])
        peak = r.get("peak_rss_mb")
        rows.append(
            f"| {r['recipe'].removeprefix('configs/')} | {r['status']} | {r.get('input', '—')} | "
            f"{r.get('batch')} ({r.get('recipe_batch') or '—'}) | {_f(r.get('wall_s'), '.0f')} | "
            f"{_f(r.get('s_per_iter'), '.1f')} | {_f(peak and peak / 1024, '.1f')} | "
            f"{notes.replace('|', '/') or '—'} |"
        )
    size = data.get("size", 800)
    caption = (
        f"_{data.get('iterations', 2)} training iterations and one evaluation per recipe "
        "(`benchmarks/coco_scale_check.py`), from random weights (frozen BatchNorms calibrated on "
        "noise), on a rendered COCO / VOC of 4 training and 2 test images"
        + (" at the recipes' own input sizes" if size == 800 else f", scaled to {size} px (smoke)")
        + "; wall time includes building the models, evaluating and IKD's adversarial copies; "
        "s/iter is the mean of the "
        "steps (Detectron2's `time`); peak RSS is the train_net process's (or a data-loader "
        f"worker's, if larger). {_hw(data)}; "
        + (f"{data['timing']} " if data.get("timing") else "")
        + f"{_date(data)}._"
    )
    return caption + "\n\n" + "\n".join(rows)


def dfad_cost_table(data: Dict[str, Any], only: Optional[Sequence[str]] = None) -> str:
    """One DFAD iteration against one FGD training step (``benchmarks/dfad_cost.py``)."""
    rows = ["| step | recipe | median s | vs one FGD step (95% CI) |", "|---|---|---|---|"]
    for r in data.get("rows", []):
        ratio = r.get("vs_fgd")
        cell = (
            f"{ratio['median']:.2f} ({ratio['ci95'][0]:.2f}–{ratio['ci95'][1]:.2f})"
            if ratio
            else "1"
        )
        rows.append(f"| {r['name']} | `{r['recipe']}` | {r['p50_ms'] / 1e3:.3f} | {cell} |")
    caption = (
        f"_Random weights, the recipes' own batches and loops (FGD: one step at batch 8; DFAD: "
        f"one iteration = K student steps + one generator step); medians and paired per-round "
        f"ratios of {data.get('repeats', '?')} interleaved rounds"
        f"{' (quick run)' if data.get('quick') else ''}. {_hw(data)}; {_date(data)}._"
    )
    return caption + "\n\n" + "\n".join(rows)


def latency_table(data: Dict[str, Any], only: Optional[Sequence[str]] = None) -> str:
    """A trained student's latency in onnxruntime (fp32, int8) and PyTorch eager, beside the
    teacher's, with the int8 graph's AP from its export (``benchmarks/export_latency.py``)."""
    from d2kd.export.latency import render_markdown

    body = render_markdown(data).split("\n", 2)[2]  # without its "# Latency" title
    h, w = data["size"]
    lines = [f"_{h}x{w} input, batch 1, {data['machine']['threads']} thread(s)._", "", body]
    e = data.get("export")
    if e:
        lines += [
            f"Accuracy of the exported student (`{e['checkpoint']}`, synth_val, "
            f"{e['eval_images']} images): PyTorch {_f(e['ap_pytorch'])} AP, onnxruntime fp32 "
            f"{_f(e['ap_fp32'])}, int8 {_f(e['ap_int8'])} (ΔAP {e['delta_ap_int8']:+.2f}); "
            f"made by `{data.get('command', 'python benchmarks/export_latency.py')}`.",
        ]
    return "\n".join(lines)


TABLES: Dict[str, Callable[[Dict[str, Any], Optional[Sequence[str]]], str]] = {
    "accuracy": lambda data, only: accuracy_table(data, only, declared=list(METHODS)),
    "accuracy_v1": accuracy_table,
    "train_overhead": train_overhead_table,
    "loss_cost": loss_cost_table,
    "quickstart": quickstart_table,
    "teacher_ablation": teacher_ablation_table,
    "coco_scale": coco_scale_table,
    "dfad_cost": dfad_cost_table,
    "latency": latency_table,
}
