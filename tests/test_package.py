"""Packaging: a missing detectron2 gives one message that says what to install."""

import subprocess
import sys


def test_missing_detectron2_message():
    code = "import sys; sys.modules['detectron2'] = None; import d2kd"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "d2kd needs detectron2" in proc.stderr and "--no-build-isolation" in proc.stderr


def test_tools_say_the_same():
    code = (
        "import sys, runpy; sys.modules['detectron2'] = None; "
        "sys.argv = ['train_net.py', '--help']; runpy.run_path('tools/train_net.py')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "d2kd needs detectron2" in proc.stderr
