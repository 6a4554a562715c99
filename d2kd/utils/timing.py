"""The one timing harness: interleaved rounds, paired ratios with bootstrap intervals.

On a shared machine absolute times drift by 5-10% within minutes, while the ratio of two
things timed side by side holds. So every d2kd measurement times all its contenders in the same
run: each round calls every contender once, in a freshly shuffled (seeded) order, and the
per-round ratios of two contenders are paired samples (shared/export-notes.md section 4.4).
"""

import random
import time
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

__all__ = ["time_interleaved", "summarize", "paired_ratio", "synchronize"]


def synchronize(device: Optional[str]) -> None:
    """Wait for queued GPU work, so a timer measures it (no-op on the CPU)."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    rounds: int,
    warmup: int = 1,
    seed: int = 0,
    device: Optional[str] = None,
) -> Dict[str, np.ndarray]:
    """Time several callables side by side.

    Args:
        fns: name -> a no-argument callable (one call is one sample).
        rounds: timed rounds; every callable runs once per round.
        warmup: untimed calls of each callable first (allocators, kernel selection).
        seed: seed of the per-round shuffle.
        device: "cuda..." to synchronise the GPU around every call.

    Returns:
        name -> seconds, shape (rounds,); index r of every array is round r.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    rng = random.Random(seed)
    out = {n: np.zeros(rounds) for n in names}
    order = list(names)
    for r in range(rounds):
        rng.shuffle(order)
        for name in order:
            synchronize(device)
            t0 = time.perf_counter_ns()
            fns[name]()
            synchronize(device)
            out[name][r] = (time.perf_counter_ns() - t0) * 1e-9
    return out


def summarize(seconds: np.ndarray) -> Dict[str, float]:
    """Percentiles in milliseconds: p10, p50, p90, p99, mean, min, and the count."""
    ms = np.asarray(seconds, dtype=float) * 1e3
    q = np.percentile(ms, [10, 50, 90, 99])
    return {
        "p10_ms": float(q[0]),
        "p50_ms": float(q[1]),
        "p90_ms": float(q[2]),
        "p99_ms": float(q[3]),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "n": int(ms.size),
    }


def paired_ratio(
    num: np.ndarray, den: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> Dict[str, Any]:
    """Median of per-round ``num / den`` with a percentile-bootstrap 95% CI over rounds.

    Args:
        num, den: (rounds,) seconds of two contenders, index-aligned by round.
        n_boot: bootstrap resamples.
        seed: bootstrap RNG seed.

    Returns:
        ``median``, ``ci95`` [lo, hi], ``ratio_of_medians``, ``unstable`` (CI wider than 5% of
        the median: rerun on a quieter machine).
    """
    r = np.asarray(num, dtype=float) / np.asarray(den, dtype=float)
    rng = np.random.default_rng(seed)
    boots = np.median(r[rng.integers(0, r.size, size=(n_boot, r.size))], axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    med = float(np.median(r))
    return {
        "median": med,
        "ci95": [float(lo), float(hi)],
        "ratio_of_medians": float(np.median(num) / np.median(den)),
        "unstable": bool((hi - lo) > 0.05 * med),
    }
