"""tools/visualize.py writes a picture for the FGD recipe (random teacher, tiny config)."""

import os
import subprocess
import sys

from helpers import ROOT

TINY_FGD = os.path.join(ROOT, "tests", "configs", "tiny_fgd.py")


def run_visualize(*args: str) -> subprocess.CompletedProcess:
    """tools/visualize.py fgd on the tiny FGD recipe, with extra arguments."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "visualize.py"), "fgd", "--config-file"]
    return subprocess.run(
        [*cmd, TINY_FGD, *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def test_fgd_attention_and_masks_png(tmp_path):
    out = tmp_path / "fgd.png"
    proc = run_visualize("--output", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_bad_index_is_named(tmp_path):
    proc = run_visualize("--index", "99", "--output", str(tmp_path / "x.png"))
    assert proc.returncode != 0 and "--index 99" in proc.stderr
