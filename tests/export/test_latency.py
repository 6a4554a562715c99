"""Latency statistics and a smoke run of the benchmark (sanity only, never absolute numbers).

The statistics are d2kd.utils.timing's (the benchmark's own copies were removed); they are
tested here because the export benchmark is what publishes their ratios.
"""

import json
import math
import pathlib

import numpy as np

import d2kd.data  # noqa: F401
from d2kd.export.latency import gemm_gflops, render_markdown, run_benchmark
from d2kd.utils.timing import paired_ratio, summarize, time_interleaved

HERE = pathlib.Path(__file__).resolve().parent
RETINANET = str(HERE / "recipe_retinanet_student.py")


def test_paired_ratio_recovers_a_known_speedup_with_a_ci():
    """Rounds share a slow/fast drift; the per-round ratio cancels it, the CI covers 1.25."""
    rng = np.random.default_rng(0)
    drift = rng.uniform(1.0, 1.5, size=40)  # the machine's speed, shared by both in a round
    student = 0.100 * drift * rng.normal(1, 0.01, 40)
    teacher = 0.125 * drift * rng.normal(1, 0.01, 40)
    r = paired_ratio(teacher, student)
    assert r["ci95"][0] <= 1.25 <= r["ci95"][1] and abs(r["median"] - 1.25) < 0.02
    assert not r["unstable"]
    s = summarize(student)
    assert s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] and s["n"] == 40


def test_rounds_are_interleaved_and_aligned():
    calls = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    times = time_interleaved(fns, rounds=5, warmup=2, seed=1)
    assert sorted(times) == ["a", "b", "c"] and all(len(v) == 5 for v in times.values())
    rounds = [calls[6 + 3 * i :][:3] for i in range(5)]  # noqa: E203  (after 2 warm-ups each)
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # the order is shuffled between rounds


def test_benchmark_writes_json_markdown_and_plot(tmp_path):
    res = run_benchmark(
        [RETINANET, RETINANET],
        str(tmp_path),
        threads=1,
        runs=3,
        warmup=1,
        size=(64, 96),
        exporter="legacy",
        ap={"student": 10.0, "teacher": 12.0},
    )
    assert sorted(res["models"]) == ["student", "teacher"]
    assert set(res["candidates"]) == {
        "student/ort-cpu-fp32", "student/torch-eager-fp32",
        "teacher/ort-cpu-fp32", "teacher/torch-eager-fp32",
    }  # fmt: skip
    student = res["models"]["student"]
    assert student["gmac"] > 0 and student["params_m"] > 1 and "gflops" not in student
    gemm = res["machine"]["gemm_gflops"]
    assert gemm > 0 and math.isclose(student["flop_floor_ms"], 2 * student["gmac"] / gemm * 1e3)
    ratio = res["ratios"]["teacher/ort-cpu-fp32 / student/ort-cpu-fp32"]
    assert math.isfinite(ratio["median"]) and ratio["ci95"][0] <= ratio["ci95"][1]
    assert "student/torch-eager-fp32 / student/ort-cpu-fp32" in res["ratios"]
    saved = json.loads((tmp_path / "latency.json").read_text())
    assert saved["machine"]["threads"] == 1 and saved["size"] == [64, 96]
    md = (tmp_path / "latency.md").read_text()
    assert "| student/ort-cpu-fp32 |" in md
    assert "| FLOP floor ms | GMAC (fvcore) |" in md and "GFLOPs" not in md
    assert (tmp_path / "latency.png").stat().st_size > 1000


def test_gemm_rate_is_measured_at_the_given_threads():
    import torch

    before = torch.get_num_threads()
    rate = gemm_gflops(threads=1, n=256, repeats=2)
    assert 0.1 < rate < 1e5 and torch.get_num_threads() == before


def test_markdown_names_multiply_adds_gmac_and_shows_the_floor():
    """fvcore counts multiply-adds: the column says GMAC, and the floor is 2 x GMAC / rate."""
    result = {
        "size": [64, 64], "runs": 3, "warmup": 1, "ratios": {},
        "machine": {"threads": 1, "cpu": "x", "cpu_count": 2, "torch": "t", "onnxruntime": "o",
                    "cpu_flags": {"avx512_vnni": True}, "gemm_gflops": 100.0},
        "models": {"s": {"gmac": 2.5, "params_m": 1.0, "flop_floor_ms": 50.0, "ap": None}},
        "candidates": {"s/ort-cpu-fp32": {"model": "s", "p50_ms": 80.0, "p90_ms": 81.0,
                                          "p99_ms": 82.0}},
    }  # fmt: skip
    md = render_markdown(result)
    assert "| s/ort-cpu-fp32 | 80.0 | 81.0 | 82.0 | 50.0 | 2.50 | 1.00 |  |" in md
    assert "2 x GMAC / 100.0 GFLOP/s" in md and "avx512_vnni" in md
