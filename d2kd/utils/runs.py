"""Run training commands as child processes a person can watch and stop.

The quickstart and the benchmark suites train by running ``tools/train_net.py`` in subprocesses
(one log per run, resumable with ``--resume``). This module is the one place that does it:

* a child never outlives its parent: on Linux it receives SIGTERM when the parent dies (even by
  SIGKILL), and Ctrl-C / SIGTERM of the parent stops every running child before returning;
* each run's wall time adds up over interrupted invocations (``bench_run.json`` in its folder),
  beside its peak resident memory (``peak_rss_mb``, as the kernel counts it);
* several runs can share the machine, each with its own thread count (``OMP_NUM_THREADS``).
"""

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .files import read_json, write_json

__all__ = [
    "Job",
    "RunFailed",
    "PROGRESS_FILE",
    "ROOT",
    "run_job",
    "run_jobs",
    "train_net_cmd",
    "eval_result",
    "read_box_metrics",
    "free_cores",
    "stop_children",
    "BOX_METRICS",
]

ROOT = Path(__file__).resolve().parents[2]
PROGRESS_FILE = "bench_run.json"
BOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")

_children: "set[subprocess.Popen]" = set()
_lock = threading.Lock()


class RunFailed(RuntimeError):
    """A child run exited non-zero; the message names its log and ends with the log's tail."""


@dataclass
class Job:
    """One command to run with its output in ``run_dir/log_name``.

    Attributes:
        cmd: argv of the command.
        run_dir: its folder (created); the log and the wall-time tally live there.
        info: extra fields recorded in the tally (e.g. max_iter, role).
        threads: torch/OpenMP threads of the child (None: inherit the environment).
        log_name: the log file name inside ``run_dir``.
        label: how progress lines name the job.
        env: extra environment variables of the child (e.g. ``DETECTRON2_DATASETS``).
    """

    cmd: List[str]
    run_dir: Path
    info: Dict[str, Any] = field(default_factory=dict)
    threads: Optional[int] = None
    log_name: str = "bench_train.log"
    label: str = ""
    on_line: Optional[Callable[[str], None]] = None
    env: Dict[str, str] = field(default_factory=dict)


def train_net_cmd(recipe: str, *opts: str) -> List[str]:
    """``python tools/train_net.py --config-file <recipe> <opts>`` (recipe relative to the repo)."""
    return [
        sys.executable,
        str(ROOT / "tools" / "train_net.py"),
        "--config-file",
        str(ROOT / recipe),
        *opts,
    ]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM this child when its parent dies (prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def stop_children(timeout: float = 10.0) -> None:
    """SIGTERM every running child, then SIGKILL those still alive after ``timeout`` seconds."""
    with _lock:
        procs = list(_children)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()


def free_cores() -> int:
    """Cores not busy with other work now (from the 1-minute load average), at least 1."""
    n = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return n
    return max(1, min(n, int(round(n - load))))


def _env(threads: Optional[int], extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ, **(extra or {}))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_job(job: Job, on_line: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Run one job to completion; return its tally (wall_s summed over invocations, status,
    peak_rss_mb: the largest over invocations, where the platform reports it).

    Args:
        job: what to run.
        on_line: called with each line the child prints (default ``job.on_line``); the log
            file gets every line regardless.

    Raises:
        RunFailed: the command exited non-zero (the tally says so too).
        KeyboardInterrupt: re-raised after the child has been stopped.
    """
    on_line = on_line or job.on_line
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tally_path = run_dir / PROGRESS_FILE
    tally = read_json(tally_path) if tally_path.is_file() else {}
    before = float(tally.get("wall_s", 0.0))
    tally.update(job.info, command=job.cmd, invocations=int(tally.get("invocations", 0)) + 1)
    tally.setdefault("started", _now())
    tally["status"] = "running"
    start = last = time.time()
    log_path = run_dir / job.log_name
    with open(log_path, "a") as log:
        proc = subprocess.Popen(
            job.cmd,
            cwd=ROOT,
            env=_env(job.threads, job.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        with _lock:
            _children.add(proc)
        try:
            for line in proc.stdout:
                log.write(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))
                if time.time() - last > 30:
                    last = time.time()
                    log.flush()
                    write_json(dict(tally, wall_s=round(before + last - start, 1)), tally_path)
            peak = _wait_peak_rss_mb(proc)
            if peak is not None:
                tally["peak_rss_mb"] = round(max(peak, tally.get("peak_rss_mb") or 0.0), 1)
        except BaseException:
            stop_children()
            raise
        finally:
            with _lock:
                _children.discard(proc)
            tally["wall_s"] = round(before + time.time() - start, 1)
            tally["status"] = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
            tally["finished"] = _now()
            write_json(tally, tally_path)
    if proc.returncode != 0:
        tail = log_path.read_text().splitlines()[-15:]
        raise RunFailed(
            f"{job.label or ' '.join(job.cmd[1:4])} failed (exit {proc.returncode}); "
            f"log: {log_path}\n" + "\n".join(tail)
        )
    return tally


def _wait_peak_rss_mb(proc: subprocess.Popen) -> Optional[float]:
    """Wait for ``proc`` and return its peak resident memory in MiB: the kernel's high-water mark
    of the child or of a descendant it waited for (data-loader workers), whichever is larger.
    Linux copies the parent's high-water mark at fork (the PDEATHSIG pre-exec hook forces a
    fork), so the figure is at least the parent's RSS then: small for the benchmark drivers.
    None where the platform does not say (no ``os.wait4``) or another thread reaped the child."""
    if not hasattr(os, "wait4"):
        proc.wait()
        return None
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped by stop_children from another thread
        proc.wait()
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    return usage.ru_maxrss / (1024.0**2 if sys.platform == "darwin" else 1024.0)


def run_jobs(
    jobs: Sequence[Job],
    max_parallel: int = 1,
    on_done: Optional[Callable[[Job, Optional[Dict[str, Any]], Optional[Exception]], None]] = None,
) -> List[Optional[Exception]]:
    """Run jobs, at most ``max_parallel`` at once; a failure does not stop the others.

    Ctrl-C (or SIGTERM of this process) stops every child and re-raises KeyboardInterrupt.

    Args:
        jobs: what to run, in order.
        max_parallel: concurrent children (give each ``threads=cores // max_parallel``).
        on_done: called after each job with (job, tally or None, error or None).

    Returns:
        per job: None if it succeeded, else its exception.
    """
    errors: List[Optional[Exception]] = [None] * len(jobs)

    def one(i: int) -> None:
        tally, err = None, None
        try:
            tally = run_job(jobs[i])
        except RunFailed as e:
            err = e
        errors[i] = err
        if on_done is not None:
            on_done(jobs[i], tally, err)

    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
            futures = [pool.submit(one, i) for i in range(len(jobs))]
            try:
                for f in futures:
                    while not f.done():
                        time.sleep(0.2)
                    f.result()
            except BaseException:
                for f in futures:
                    f.cancel()
                stop_children()
                raise
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    return errors


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def eval_result(run_dir: Path) -> Optional[Path]:
    """The evaluation of a run's final model, if there is one.

    ``eval_final.json`` (an ``--eval-only`` run), else ``eval_last.json`` written after the last
    checkpoint ``model_final.pth``.
    """
    run_dir = Path(run_dir)
    final, last, ckpt = (
        run_dir / n for n in ("eval_final.json", "eval_last.json", "model_final.pth")
    )
    if final.is_file():
        return final
    if last.is_file() and ckpt.is_file() and last.stat().st_mtime >= ckpt.stat().st_mtime:
        return last
    return None


def read_box_metrics(path: Path) -> Dict[str, Optional[float]]:
    """COCO box metrics of an evaluation JSON; NaN (no detections in an area range) -> None."""
    from .files import clean_nan

    bbox = clean_nan(read_json(path)["bbox"])
    return {k: bbox.get(k) for k in BOX_METRICS}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
