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

import accuracy_suite  # noqa: E402
import loss_cost  # noqa: E402
import render_tables  # noqa: E402
import train_overhead  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Subprocesses (train_net, memory workers) use one core, like the rest of the suite."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def ghost_method(monkeypatch):
    """A registry row whose recipe does not exist (a method not implemented yet)."""
    from _common import METHODS, Method

    monkeypatch.setitem(METHODS, "ghost", Method("configs/ghost/none.py", issue="none"))
    return "ghost"


def test_accuracy_suite_smoke_runs_then_resumes(tmp_path, capsys, ghost_method):
    out = tmp_path / "acc"
    argv = ["--smoke", "--seeds", "0", "--methods", "baseline", "mse", ghost_method]
    argv += ["--out", str(out)]
    assert accuracy_suite.main(argv) == 0
    printed = capsys.readouterr().out
    assert "ghost: not implemented yet" in printed
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
    assert "ghost" in data["not_implemented"]
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


def test_loss_cost_names_a_loss_it_cannot_measure(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(loss_cost.LOSSES, "ghost", ("d2kd.losses.ghost", None))
    assert loss_cost.available("ghost") == "ghost: not implemented yet (d2kd.losses.ghost missing)"


def test_loss_cost_quick_and_render(tmp_path, capsys):
    out = tmp_path / "res" / "loss_cost.json"
    assert loss_cost.main(["--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    expected = [n for n in loss_cost.LOSSES if loss_cost.available(n) is None]
    assert {"mse", "fgd", "lshfm_lshl2", "head_akd"} <= set(expected)
    assert [r["term"] for r in data["rows"]] == expected
    assert all(r["total_ms"] > 0 for r in data["rows"])
    assert data["fgd_vs_reference"]["rows"], "the FGD vectorised-vs-reference comparison ran"
    assert (out.parent / "fgd_loss_speed.json").is_file()

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
    assert render_tables.main(["--root", str(repo)]) == 1
    assert "train_overhead.json, which is missing" in capsys.readouterr().err
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
    table = render_tables.accuracy_table(merged, ["head_assist"])
    assert "| teacher (faster_rcnn_R18w_teacher) | 1500 |" in table
    assert "retinanet_R18w_teacher" not in table


def test_committed_readme_tables_match_their_json(capsys):
    """The README and project tables in the repository are exactly what their JSON renders to."""
    assert render_tables.main(["--check"]) == 0, capsys.readouterr()
