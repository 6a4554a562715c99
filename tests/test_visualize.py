"""tools/visualize.py writes its pictures (random teachers, tiny configs)."""

import os
import subprocess
import sys

from helpers import ROOT

TINY_FGD = os.path.join(ROOT, "tests", "configs", "tiny_fgd.py")
TINY_IKD = os.path.join(ROOT, "tests", "configs", "tiny_ikd.py")
PNG = b"\x89PNG\r\n\x1a\n"


def run_visualize(*args: str, command: str = "fgd", config: str = TINY_FGD):
    """tools/visualize.py COMMAND on a tiny recipe, with extra arguments."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "visualize.py"), command, "--config-file"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [*cmd, config, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )


def test_fgd_attention_and_masks_png(tmp_path):
    out = tmp_path / "fgd.png"
    proc = run_visualize("--output", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5000


def test_bad_index_is_named(tmp_path):
    proc = run_visualize("--index", "99", "--output", str(tmp_path / "x.png"))
    assert proc.returncode != 0 and "--index 99" in proc.stderr


def test_adversarial_clean_perturbed_and_difference_png(tmp_path):
    out = tmp_path / "adv.png"
    proc = run_visualize("--output", str(out), command="adversarial", config=TINY_IKD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5000
