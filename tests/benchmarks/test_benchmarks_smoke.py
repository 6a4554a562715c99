"""CI smoke of the benchmark runners in benchmarks/: tiny recipes, a few iterations, tmp outputs.

These check that each runner runs end to end and writes what the tables are rendered from; the
numbers themselves are meaningless at this size (performance is measured by the scripts, never in
tests). The synthetic data goes to the session's $D2KD_CACHE (tests/conftest.py).
"""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common  # noqa: E402
import accuracy_suite  # noqa: E402
import loss_cost  # noqa: E402
import render_tables  # noqa: E402
import torch  # noqa: E402
import train_overhead  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Subprocesses (train_net, memory workers) use one core, like the rest of the suite."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_accuracy_suite_smoke_runs_then_resumes(tmp_path, capsys):
    out = tmp_path / "acc"
    argv = ["--smoke", "--seeds", "0", "--methods", "baseline", "mse", "lshfm_l2"]
    argv += ["--out", str(out)]
    assert accuracy_suite.main([*argv, "--jobs", "2"]) == 0  # the two runs side by side
    printed = capsys.readouterr().out
    assert "lshfm_l2: no smoke recipe" in printed
    assert "| baseline | 2 | 1 |" in printed and "| mse | 2 | 1 |" in printed

    data = json.loads((out / "accuracy.json").read_text())
    assert data["smoke"] and data["seeds"] == [0]
    assert set(data["methods"]) == {"baseline", "mse"}
    assert [r["status"] for r in data["runs"]] == ["ok", "ok"]
    assert all(r["wall_s"] > 0 and "AP" in r["metrics"] for r in data["runs"])
    assert "AP" in data["teacher"]["metrics"]
    assert data["schedule"]["max_iter"] == {
        "teacher configs/quickstart/retinanet_R18w_teacher.py": 2,
        "baseline": 2,
        "mse": 2,
    }
    assert {"platform", "cpu_count", "torch", "device"} <= set(data["hardware"])
    assert "lshfm_l2" in data["skipped"]
    assert data["runs"][1]["output_dir"] == str(out / "mse" / "seed0")  # outside the repo
    assert (out / "accuracy.png").stat().st_size > 1000
    assert (out / "mse" / "seed0" / "model_final.pth").is_file()

    # Run again: every run is complete, so nothing trains and the results are the same.
    assert accuracy_suite.main(argv) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == 2
    again = json.loads((out / "accuracy.json").read_text())
    assert [r["metrics"] for r in again["runs"]] == [r["metrics"] for r in data["runs"]]
    progress = json.loads((out / "mse" / "seed0" / accuracy_suite.PROGRESS).read_text())
    assert progress["invocations"] == 1

    # --collect tabulates what is complete and trains nothing (seed 1 was never run).
    assert accuracy_suite.main(argv[:2] + ["0", "1", *argv[3:], "--collect"]) == 0
    assert capsys.readouterr().out.count("seed 1: not run yet (--collect trains nothing)") == 2
    assert not (out / "mse" / "seed1").exists()
    collected = json.loads((out / "accuracy.json").read_text())
    assert [r["metrics"] for r in collected["runs"]] == [r["metrics"] for r in data["runs"]]


def test_accuracy_suite_dry_run_prints_commands(tmp_path, capsys):
    argv = ["--smoke", "--dry-run", "--seeds", "3", "--methods", "fgd", "--out", str(tmp_path)]
    assert accuracy_suite.main(argv) == 0
    printed = capsys.readouterr().out
    assert "tiny_fgd.py --resume" in printed and "train.seed=3" in printed
    assert "model.teacher.weights=" in printed
    assert not (tmp_path / "fgd").exists()


def test_accuracy_suite_rejects_unknown_method():
    with pytest.raises(SystemExit, match="unknown method.*'nope'.*known: baseline"):
        accuracy_suite.main(["--smoke", "--methods", "nope"])


def test_train_overhead_quick(tmp_path, capsys):
    out = tmp_path / "overhead.json"
    assert train_overhead.main(["--quick", "--methods", "mse", "--out", str(out)]) == 0
    assert "KD / (student + teacher)" in capsys.readouterr().out
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["method"] == "mse" and row["kind"] == "quick"
    for key in ("student_s", "teacher_s", "kd_s"):
        assert row[key] > 0
    assert row["ratio"] == pytest.approx(row["kd_s"] / (row["student_s"] + row["teacher_s"]))
    assert set(row["memory"]) == {"student", "teacher", "kd"}
    assert all(v >= 0 for v in row["memory"].values())


def test_loss_cost_finds_the_terms_probes_and_names_those_without(monkeypatch):
    from d2kd.distill.probes import QUICK_SHAPES, ProbeInputs
    from d2kd.distill.term import KDTerm
    from d2kd.distill.terms.feature_mse import FeatureMSETerm
    from d2kd.distill.terms.mimic import MimicTermBase, RCNNMimicTerm, RetinaNetMimicTerm

    class GhostTerm(KDTerm):
        """A term without a cost probe."""

    classes = [GhostTerm, RCNNMimicTerm, RetinaNetMimicTerm, MimicTermBase, FeatureMSETerm]
    monkeypatch.setattr(loss_cost, "term_classes", lambda: classes)
    probes, without = loss_cost.discover_probes(ProbeInputs.synthetic(QUICK_SHAPES))
    assert without == ["GhostTerm"]
    # LSHFM's probes come from its base class, once; rows follow the methods' table order.
    assert list(probes) == ["mse", "lshfm_lshl2", "lshfm_l2", "lshfm_lsh"]
    loss = probes["mse"]()
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_loss_cost_quick_and_render(tmp_path, capsys):
    out = tmp_path / "res" / "loss_cost.json"
    assert loss_cost.main(["--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = [r["term"] for r in data["rows"]]
    expected = {"lshfm_lshl2", "lshfm_l2", "lshfm_lsh", "dfad", "head_akd", "head_ckd"}
    assert rows[:2] == ["mse", "fgd"] and expected <= set(rows)
    assert all(r["total_ms"] > 0 and r["forward_ms"] > 0 for r in data["rows"])
    assert data["shapes"]["channels"] == 32 and data["repeats"] == 2
    # IKD's adversarial term costs one more feature loss on the adversarial stream: no probe.
    no_probe = "AdversarialFeatureTerm"
    assert no_probe in data["no_probe"] and f"{no_probe}: no cost probe" in capsys.readouterr().out

    readme = tmp_path / "README.md"
    readme.write_text("<!-- d2kd:table loss_cost -->\n<!-- d2kd:end loss_cost -->\n")
    assert render_tables.main(["--root", str(tmp_path), "--json", f"loss_cost={out}"]) == 0
    assert "| fgd |" in readme.read_text()


ACCURACY = dict(
    smoke=False,
    finished="2026-01-02T03:04:05",
    hardware=dict(device="cpu", cpu="Test CPU", cpu_count=2, torch="2.x", torch_threads=2),
    schedule=dict(scale=1.0, max_iter=dict(teacher=3000, baseline=1000, mse=1000)),
    seeds=[0, 1],
    teacher=dict(
        recipe="configs/quickstart/retinanet_R18w_teacher.py",
        max_iter=3000,
        metrics=dict(AP=30.0, AP50=50.0, APs=20.0, APm=40.0),
    ),
    methods=dict(
        baseline=dict(
            max_iter=1000,
            n=2,
            gain_AP=0.0,
            gap_closed=0.0,
            metrics=dict(AP=dict(mean=20.0, std=0.5), AP50=dict(mean=40.0, std=1.0)),
        ),
        mse=dict(
            max_iter=1000,
            n=2,
            gain_AP=2.5,
            gap_closed=0.25,
            metrics=dict(AP=dict(mean=22.5, std=0.25), AP50=dict(mean=43.0, std=None)),
        ),
    ),
    not_implemented={"lshfm_l2": "lshfm_l2: not implemented yet"},
)


@pytest.fixture
def repo(tmp_path):
    """A temporary repository root with marked READMEs and result JSON."""
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "accuracy.json").write_text(json.dumps(ACCURACY))
    (tmp_path / "README.md").write_text(
        "# d2kd\n\nintro\n\n<!-- d2kd:table accuracy -->\nhand-typed, stale\n"
        "<!-- d2kd:end accuracy -->\n\nmore text\n"
    )
    project = tmp_path / "projects" / "FGD"
    project.mkdir(parents=True)
    (project / "README.md").write_text(
        "<!-- d2kd:table accuracy:fgd -->\n<!-- d2kd:end accuracy:fgd -->\n"
    )
    return tmp_path


def test_render_tables_rewrites_sections_and_checks(repo, capsys):
    root = ["--root", str(repo)]
    assert render_tables.main(root + ["--check"]) == 1
    assert "out of date" in capsys.readouterr().out
    assert render_tables.main(root) == 0
    text = (repo / "README.md").read_text()
    assert text.startswith("# d2kd\n\nintro\n\n<!-- d2kd:table accuracy -->\n")
    assert text.endswith("<!-- d2kd:end accuracy -->\n\nmore text\n")
    assert "hand-typed" not in text
    assert "| mse | 1000 | 2 | 22.5 ± 0.2 | 43.0 |" in text and "| +2.5 | 25% |" in text
    assert "Test CPU, 2 cores" in text
    assert "| teacher (retinanet_R18w_teacher) | 3000 | — | 30.0 | 50.0 |" in text
    assert "Not run yet: lshfm_l2" in text
    project = (repo / "projects" / "FGD" / "README.md").read_text()
    assert "| baseline |" in project and "| mse |" not in project
    assert render_tables.main(root + ["--check"]) == 0

    # A hand edit inside a section is caught, and --check leaves the file alone.
    (repo / "README.md").write_text(text.replace("22.5 ± 0.2", "23.5 ± 0.2"))
    assert render_tables.main(root + ["--check"]) == 1
    assert "23.5 ± 0.2" in (repo / "README.md").read_text()


def test_render_tables_errors_name_the_problem(repo, capsys):
    readme = repo / "README.md"
    readme.write_text("<!-- d2kd:table nope -->\n<!-- d2kd:end nope -->\n")
    assert render_tables.main(["--root", str(repo), "--check"]) == 1
    assert "unknown table 'nope'" in capsys.readouterr().err
    readme.write_text("<!-- d2kd:table train_overhead -->\n<!-- d2kd:end train_overhead -->\n")
    missing = ["--json", f"train_overhead={repo / 'nope.json'}"]
    assert render_tables.main(["--root", str(repo), *missing]) == 1
    assert "nope.json, which is missing" in capsys.readouterr().err
    readme.write_text("x\n<!-- d2kd:table accuracy -->\nno end marker\n")
    assert render_tables.main(["--root", str(repo)]) == 1
    assert "README.md:2: '<!-- d2kd:table accuracy -->' has no" in capsys.readouterr().err


def test_publish_merges_methods_and_measures_gaps_against_each_methods_teacher(tmp_path):
    """A later run of some methods replaces theirs and keeps the others; a method distilled from
    another teacher (HEAD's Faster R-CNN) closes a share of the gap to that teacher."""
    path = tmp_path / "accuracy.json"
    path.write_text(json.dumps(dict(ACCURACY, runs=[dict(method="mse", seed=0)])))
    frcnn = "configs/quickstart/faster_rcnn_R18w_teacher.py"
    later = dict(
        ACCURACY,
        seeds=[2],
        teachers={frcnn: dict(recipe=frcnn, max_iter=1500, metrics=dict(AP=24.0))},
        methods=dict(
            head_assist=dict(
                teacher=frcnn, max_iter=1000, n=1, metrics=dict(AP=dict(mean=22.0, std=None))
            )
        ),
        runs=[dict(method="head_assist", seed=2)],
        schedule=dict(scale=1.0, max_iter=dict(head_assist=1000)),
    )
    merged = accuracy_suite.publish(later, path)
    assert list(merged["methods"]) == ["baseline", "mse", "head_assist"]
    assert [r["method"] for r in merged["runs"]] == ["mse", "head_assist"]
    assert merged["seeds"] == [0, 1, 2]
    assert merged["schedule"]["max_iter"]["mse"] == 1000
    assert merged["methods"]["head_assist"]["gap_closed"] == pytest.approx(0.5)  # 2 of 24 - 20
    assert json.loads(path.read_text())["methods"]["head_assist"]["gain_AP"] == pytest.approx(2.0)
    table = _common.accuracy_table(merged, ["head_assist"])
    assert "| teacher (faster_rcnn_R18w_teacher) | 1500 |" in table
    assert "retinanet_R18w_teacher" not in table


ABLATION = dict(
    benchmark="teacher_ablation",
    recipe="configs/quickstart/ablation/retinanet_R18w_teacher_v1.py",
    iters=600,
    batch=8,
    hardware=dict(device="cpu", cpu="Test CPU", cpu_count=2, torch="2.x", torch_threads=1),
    finished="2026-12-02T10:00:00+0000",
    rows=dict(
        base=dict(change="as it was", overrides=[], metrics=dict(AP=5.0, AP50=10.0, APs=4.0)),
        head_gn=dict(
            change="GroupNorm | in the head",
            overrides=["model.head.norm=GN"],
            metrics=dict(AP=7.25, AP50=14.0, APs=6.0, APm=9.0),
        ),
    ),
)


def test_render_tables_fills_benchmarks_readme_and_waits_for_missing_json(repo, capsys):
    """benchmarks/README.md is rendered too; a table whose JSON does not exist yet says so (and
    --check then flags it once the JSON appears)."""
    readme = repo / "benchmarks" / "README.md"
    readme.write_text(
        "# B\n\n<!-- d2kd:table teacher_ablation -->\n<!-- d2kd:end teacher_ablation -->\n"
    )
    root = ["--root", str(repo)]
    assert render_tables.main(root) == 0
    assert "_Not measured yet: `python benchmarks/teacher_ablation.py` writes" in readme.read_text()
    assert render_tables.main(root + ["--check"]) == 0
    (repo / "benchmarks" / "results" / "teacher_ablation.json").write_text(json.dumps(ABLATION))
    assert render_tables.main(root + ["--check"]) == 1
    assert render_tables.main(root) == 0
    text = readme.read_text()
    assert "| row | change | overrides | AP | AP50 | APs | APm | ΔAP vs base |" in text
    assert "| base | as it was | — | 5.0 | 10.0 | 4.0 | — | — |" in text
    assert (
        "| head_gn | GroupNorm \\| in the head | `model.head.norm=GN` | 7.2 | 14.0 | 6.0 | 9.0 "
        "| +2.2 |" in text
    )
    assert "--rows NAME" in text
    assert "after 600 iterations at batch 8" in text and "retinanet_R18w_teacher_v1.py" in text
    assert "Test CPU, 2 cores" in text and "torch threads" not in text


def test_methods_are_read_from_the_recipes_in_table_order():
    methods = list(_common.METHODS.values())
    assert [m.name for m in methods[:3]] == ["baseline", "mse", "fgd"]
    assert [m.order for m in methods] == sorted(m.order for m in methods)
    # Each method's rows (its recipes' folder under configs/) form one block, whatever the
    # methods are: a new method is checked here without being named.
    folders = [m.recipe.split("/")[1] for m in methods]
    blocks = [f for i, f in enumerate(folders) if i == 0 or f != folders[i - 1]]
    assert len(blocks) == len(set(blocks)), f"a method's rows are not together: {folders}"
    fgd = _common.METHODS["fgd"]
    assert fgd.recipe == "configs/fgd/retinanet_R18_from_R18w_synth.py"
    assert fgd.smoke == "tests/configs/tiny_fgd.py" and len(fgd.coco) == 2
    assert _common.METHODS["head_akd"].teacher == "configs/quickstart/faster_rcnn_R18w_teacher.py"
    assert _common.METHODS["lshfm_l2"].teacher == _common.MAIN_TEACHER


def write_recipe(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_discovery_sorts_declarations_and_validates_them(tmp_path):
    write_recipe(tmp_path, "tests/configs/tiny.py", "")
    write_recipe(tmp_path, "configs/b/late.py", "x = 1\n__benchmark__ = {'name': 'late'}\n")
    write_recipe(tmp_path, "configs/a/second.py", "__benchmark__ = dict(name='two', order=2)\n")
    write_recipe(
        tmp_path,
        "configs/c/first.py",
        "__benchmark__ = dict(name='one', order=1, smoke='tests/configs/tiny.py',\n"
        "    prepare=['tools/x.py', '{recipe}'], coco={'R50': '../b/late.py'})\n",
    )
    write_recipe(tmp_path, "configs/common/models/none.py", "model = dict()\n")
    found = _common.discover_methods(tmp_path)
    assert list(found) == ["one", "two", "late"]
    one = found["one"]
    assert one.recipe == "configs/c/first.py" and one.prepare == ("tools/x.py", "{recipe}")
    assert one.coco == (("R50", "configs/b/late.py"),) and one.teacher == _common.MAIN_TEACHER

    bad = {
        "{'name': 'x', 'smoek': 'a.py'}": "unknown key\\(s\\) \\['smoek'\\]",
        "{'order': 3}": "needs a 'name'",
        "{'name': 'x', 'order': '3'}": "\\['order'\\] must be",
        "{'name': 'x', 'smoke': 'tests/configs/none.py'}": "names tests/configs/none.py, which",
        "dict(name=x)": "must be a literal dict",
        "dict(**other)": "must be a literal dict",
        "['x']": "must be a dict, got list",
        "{'name': 'two'}": "configs/a/second.py and configs/z/bad.py both declare the method 'two'",
    }
    for text, message in bad.items():
        write_recipe(tmp_path, "configs/z/bad.py", f"__benchmark__ = {text}\n")
        with pytest.raises(ValueError, match=message):
            _common.discover_methods(tmp_path)


def test_result_paths_are_portable(monkeypatch, tmp_path):
    monkeypatch.setenv("D2KD_CACHE", str(tmp_path / "cache"))
    assert _common.portable_path(_common.ROOT / "output" / "x" / "seed0") == "output/x/seed0"
    cached = tmp_path / "cache" / "teachers" / "t-1" / "model_final.pth"
    assert _common.portable_path(cached) == "$D2KD_CACHE/teachers/t-1/model_final.pth"
    assert _common.portable_path(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")


def test_committed_results_hold_no_machine_paths():
    for path in (_common.ROOT / "benchmarks" / "results").glob("*.json"):
        text = path.read_text()
        assert '"/' not in text, f"{path.name} holds an absolute path"


def test_benchmarks_import_the_library_not_each_other_or_the_tests():
    """Shared code lives in d2kd/ (or benchmarks/_common.py); a runner never imports another
    runner, and nothing here reaches into tests/."""
    import ast

    runners = {p.stem for p in (_common.ROOT / "benchmarks").glob("*.py")} - {"_common"}
    for path in (_common.ROOT / "benchmarks").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & runners, f"{path.name} imports {sorted(imported & runners)}"
        assert '"tests"' not in path.read_text(), f"{path.name} reaches into tests/"


def test_committed_readme_tables_match_their_json(capsys):
    """The README and project tables in the repository are exactly what their JSON renders to."""
    assert render_tables.main(["--check"]) == 0, capsys.readouterr()


def test_dfad_cost_quick_times_an_iteration_against_an_fgd_step(tmp_path, capsys):
    """benchmarks/dfad_cost.py --quick: both steps timed side by side, the ratio with its CI."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dfad_cost", ROOT / "benchmarks" / "dfad_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "dfad_cost.json"
    assert module.main(["--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["rows"]] == ["fgd", "dfad"]
    ratio = data["rows"][1]["vs_fgd"]
    assert ratio["median"] > 0 and ratio["ci95"][0] <= ratio["median"] <= ratio["ci95"][1]
    assert "| dfad |" in capsys.readouterr().out


def test_latency_table_names_the_int8_accuracy_and_its_command():
    """The README's latency section: the latency report plus the exported student's AP per
    precision, with the command that made it (benchmarks/export_latency.py)."""
    result = {
        "size": [128, 128], "runs": 3, "warmup": 1,
        "machine": {"threads": 1, "cpu": "x", "cpu_count": 2, "torch": "t", "onnxruntime": "o",
                    "cpu_flags": {}, "gemm_gflops": 100.0},
        "models": {"student": {"gmac": 2.5, "params_m": 1.0, "flop_floor_ms": 50.0, "ap": 30.0}},
        "candidates": {"student/ort-cpu-fp32": {"model": "student", "p50_ms": 80.0,
                                                "p90_ms": 81.0, "p99_ms": 82.0}},
        "ratios": {"student/ort-cpu-fp32 / student/ort-cpu-int8": {
            "median": 2.0, "ci95": [1.9, 2.1], "ratio_of_medians": 2.0, "unstable": False}},
        "export": {"checkpoint": "out/model_final.pth", "eval_images": "all", "ap_pytorch": 30.0,
                   "ap_fp32": 30.0, "ap_int8": 29.6, "delta_ap_int8": -0.4},
        "command": "python benchmarks/export_latency.py --checkpoint out/model_final.pth",
    }  # fmt: skip
    md = _common.TABLES["latency"](result, None)
    assert md.startswith("_128x128 input, batch 1, 1 thread(s)._") and "# Latency" not in md
    assert "| student/ort-cpu-fp32 / student/ort-cpu-int8 | 2.000 |" in md
    assert "int8 29.6 (ΔAP -0.40)" in md and "--checkpoint out/model_final.pth" in md
