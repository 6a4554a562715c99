"""d2kd.utils.runs: a child's peak memory and environment reach its tally."""

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
    again = (tmp_path / "bench_run.json").read_text()
    assert '"status": "exit 3"' in again and f'"peak_rss_mb": {tally["peak_rss_mb"]}' in again
