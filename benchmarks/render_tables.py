#!/usr/bin/env python
"""Render the benchmark tables into README files from the result JSON; never type them by hand.

A README section to fill is delimited by two marker lines::

    <!-- d2kd:table accuracy -->
    (generated; everything between the markers is replaced)
    <!-- d2kd:end accuracy -->

NAME is one of: accuracy, train_overhead, loss_cost, fgd_loss_speed, quickstart. An optional
``:a,b`` suffix keeps only those methods (``accuracy:fgd`` shows the teacher, the baseline and fgd;
``train_overhead:fgd``), for a project's README. Each table states the hardware and the schedule
recorded in its JSON.

    python benchmarks/render_tables.py            # rewrite README.md and projects/*/README.md
    python benchmarks/render_tables.py --check    # exit 1 if a section differs from its JSON

The scripts that produce the JSON print their tables with the same functions.
"""

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import hardware_line  # noqa: E402

# Where each table's JSON is (relative to --root unless overridden with --json NAME=PATH).
SOURCES = {
    "accuracy": "benchmarks/results/accuracy.json",
    "train_overhead": "benchmarks/results/train_overhead.json",
    "loss_cost": "benchmarks/results/loss_cost.json",
    "fgd_loss_speed": "benchmarks/results/fgd_loss_speed.json",
    "quickstart": "benchmarks/results/quickstart.json",
}
METRICS = ("AP", "AP50", "APs", "APm")
MARKER = re.compile(
    r"^<!-- d2kd:table (?P<name>[\w.,:-]+) -->\n(?P<body>.*?)^<!-- d2kd:end (?P=name) -->$",
    re.S | re.M,
)
START = re.compile(r"^<!-- d2kd:table (?P<name>[\w.,:-]+) -->$", re.M)


def _hw(data: Dict[str, Any]) -> str:
    return hardware_line(data.get("hardware"))


def _hw_no_threads(data: Dict[str, Any]) -> str:
    """The hardware line without thread counts: runs of one table may use different ones, and
    they change the time, not the accuracy."""
    hw = {k: v for k, v in (data.get("hardware") or {}).items() if k != "torch_threads"}
    return hardware_line(hw or None)


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


# ------------------------------------------------------------------------------------------ tables
def accuracy_table(data: Dict[str, Any], only: Optional[Sequence[str]] = None) -> str:
    """Teachers, baseline and each method: AP metrics mean ± std over seeds, gain, gap closed."""
    sched = data.get("schedule", {})
    methods = {
        name: m
        for name, m in data.get("methods", {}).items()
        if not only or name in only or name == "baseline"
    }
    teachers = data.get("teachers") or {data.get("teacher", {}).get("recipe", "?"): data["teacher"]}
    main = next(iter(teachers))
    used = [t for t in teachers if t == main or any(m.get("teacher") == t for m in methods.values())]
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
    missing = [n for n in data.get("not_implemented", {}) if not only or n in only]
    missing += [n for n in only or () if n not in methods and n not in missing]
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


def fgd_loss_speed_table(data: Dict[str, Any], only: Optional[Sequence[str]] = None) -> str:
    """The vectorised FGD loss against the loop reference (benchmarks/fgd_loss_speed.py)."""
    rows = [
        "| boxes/img | masks fast ms | masks loop ms | masks x "
        "| loss f+b fast ms | loss f+b ref ms | loss x |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data.get("rows", []):
        rows.append(
            f"| {r['boxes_per_image']} | {r['masks_fast_ms']:.3f} | {r['masks_ref_ms']:.3f} | "
            f"{r['masks_speedup']:.1f} | {r['loss_fwd_bwd_fast_ms']:.1f} | "
            f"{r['loss_fwd_bwd_ref_ms']:.1f} | {r['loss_speedup']:.2f} |"
        )
    hw = data.get("hardware") or dict(
        device=data.get("device"),
        cpu=data.get("machine"),
        cpu_count=data.get("cpu_count"),
        torch_threads=data.get("threads"),
        torch=data.get("torch"),
    )
    caption = (
        f"_Batch {len(data.get('image_sizes', []))}, P3–P7 of {data.get('image_sizes', [['?']])[0]}"
        f" padded to {data.get('padded_hw')}, C = {_f(data.get('channels'), 'd')}; medians, "
        f"interleaved{' (quick run)' if data.get('quick') else ''}. "
        f"{_hw(dict(hardware=hw))}._"
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
        f"_Synthetic val split; `make quickstart` with the recipes' schedules"
        + (f" ({sched_txt} at batch 8)" if sched_txt else "")
        + f". {_hw(data)}"
        + (f"; wall time: {wall}" if wall else "")
        + "._"
    )
    return caption + "\n\n" + "\n".join(rows)


TABLES: Dict[str, Callable[[Dict[str, Any], Optional[Sequence[str]]], str]] = {
    "accuracy": accuracy_table,
    "train_overhead": train_overhead_table,
    "loss_cost": loss_cost_table,
    "fgd_loss_speed": fgd_loss_speed_table,
    "quickstart": quickstart_table,
}


# ----------------------------------------------------------------------------------------- README
def render_section(spec: str, sources: Dict[str, Path], root: Path = ROOT) -> str:
    """The generated body for a marker ``NAME[:a,b]``.

    Raises:
        KeyError: unknown table name.
        FileNotFoundError: the table's JSON does not exist.
    """
    name, _, arg = spec.partition(":")
    if name not in TABLES:
        raise KeyError(f"[render_tables] unknown table '{name}'; known: {', '.join(TABLES)}")
    path = sources[name]
    if not path.is_file():
        raise FileNotFoundError(f"[render_tables] table '{name}' needs {path}, which is missing")
    data = json.loads(path.read_text())
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        rel = path.name
    body = TABLES[name](data, [a for a in arg.split(",") if a] or None)
    return f"<!-- generated by benchmarks/render_tables.py from {rel}; do not edit -->\n{body}\n"


def render_text(
    text: str, sources: Dict[str, Path], where: str = "", root: Path = ROOT
) -> Tuple[str, List[str]]:
    """Replace every marked section of ``text``.

    Returns:
        (new text, list of errors); a section that cannot be rendered is left as it was.

    Raises:
        ValueError: a start marker without its end marker.
    """
    closed = {m.start() for m in MARKER.finditer(text)}
    for m in START.finditer(text):
        if m.start() not in closed:
            line = text.count("\n", 0, m.start()) + 1
            raise ValueError(
                f"[render_tables] {where}:{line}: '<!-- d2kd:table {m['name']} -->' has no "
                f"'<!-- d2kd:end {m['name']} -->' after it"
            )
    errors: List[str] = []

    def replace(m: "re.Match") -> str:
        try:
            body = render_section(m["name"], sources, root)
        except (KeyError, FileNotFoundError, json.JSONDecodeError) as e:
            errors.append(f"{where}: {e.args[0] if e.args else e}")
            return m.group(0)
        return f"<!-- d2kd:table {m['name']} -->\n{body}<!-- d2kd:end {m['name']} -->"

    return MARKER.sub(replace, text), errors


def readme_files(root: Path) -> List[Path]:
    return [
        p for p in [root / "README.md", *sorted(root.glob("projects/*/README.md"))] if p.is_file()
    ]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if a README section is stale")
    ap.add_argument("--root", default=str(ROOT), help="repository root holding the READMEs")
    ap.add_argument(
        "--json", action="append", default=[], metavar="NAME=PATH", help="another JSON for a table"
    )
    ap.add_argument(
        "files", nargs="*", help="README files (default: README.md, projects/*/README.md)"
    )
    args = ap.parse_args(argv)
    root = Path(args.root)
    sources = {k: root / v for k, v in SOURCES.items()}
    for item in args.json:
        name, sep, path = item.partition("=")
        if not sep or name not in TABLES:
            ap.error(f"--json expects NAME=PATH with NAME in {', '.join(TABLES)}; got '{item}'")
        sources[name] = Path(path)
    files = [Path(f) for f in args.files] or readme_files(root)
    stale, errors = [], []
    for path in files:
        text = path.read_text()
        try:
            new, errs = render_text(text, sources, where=str(path), root=root)
        except ValueError as e:
            errors.append(str(e))
            continue
        errors += errs
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    for e in errors:
        print(e, file=sys.stderr)
    if args.check:
        for p in stale:
            print(f"[render_tables] {p} is out of date; run python benchmarks/render_tables.py")
        return 1 if stale or errors else 0
    for p in stale:
        print(f"[render_tables] updated {p}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
