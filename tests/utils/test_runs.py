"""d2kd.utils.runs: a child's peak memory and environment reach its tally."""

import json
import sys

import pytest

from d2kd.utils.runs import Job, RunFailed, run_job


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss units: Linux")
def test_tally_records_the_childs_peak_memory_and_environment(tmp_path):
    """A child that touches 200 MiB reports at least that much, though it frees it before
    exiting (the kernel's high-water mark, not the RSS at exit); its extra env reaches it."""
    code = (
        "import os; x = b'1' * (200 << 20); del x; "
        "assert os.environ['D2KD_TEST_VAR'] == 'set', os.environ.get('D2KD_TEST_VAR')"
    )
    job = Job([sys.executable, "-c", code], tmp_path, env={"D2KD_TEST_VAR": "set"})
    tally = run_job(job)
    assert tally["status"] == "ok"
    assert 200 <= tally["peak_rss_mb"] < 2000

    # The largest over invocations is kept; a failure still records it.
    small = Job([sys.executable, "-c", "raise SystemExit(3)"], tmp_path)
    with pytest.raises(RunFailed, match="exit 3"):
        run_job(small)
    again = json.loads((tmp_path / "bench_run.json").read_text())
    # >=: a forked child starts with its parent's high-water mark (Linux copies it at fork), so
    # under a large pytest worker the second child can report a little more than the first.
    assert again["status"] == "exit 3" and again["peak_rss_mb"] >= tally["peak_rss_mb"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_children_die_with_their_parent(tmp_path):
    """A parent killed with SIGKILL (no chance to clean up) takes its child run with it: the
    quickstart's student trainings no longer outlive a killed quickstart."""
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    parent = (
        "import sys; from pathlib import Path; from d2kd.utils.runs import Job, run_job; "
        f"run_job(Job([sys.executable, '-c', {child!r}], Path({str(tmp_path)!r})))"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.time() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.time() < deadline and proc.poll() is None, "the child never started"
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            state = open(f"/proc/{child_pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state in ("Z", "X"):  # dead, waiting for init to reap it
            return
        time.sleep(0.05)
    os.kill(child_pid, signal.SIGKILL)
    pytest.fail("the child outlived its killed parent")
