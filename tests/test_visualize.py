"""tools/visualize.py writes a picture for the FGD recipe (random teacher, tiny config)."""

import os
import subprocess
import sys

from helpers import ROOT


def test_fgd_attention_and_masks_png(tmp_path):
    out = tmp_path / "fgd.png"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "visualize.py"),
            "fgd",
            "--config-file",
            os.path.join(ROOT, "tests", "configs", "tiny_fgd.py"),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_bad_index_is_named(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "visualize.py"),
            "fgd",
            "--config-file",
            os.path.join(ROOT, "tests", "configs", "tiny_fgd.py"),
            "--index",
            "99",
            "--output",
            str(tmp_path / "x.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode != 0 and "--index 99" in proc.stderr
