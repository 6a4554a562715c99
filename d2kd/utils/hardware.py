"""What a measurement ran on: recorded beside every number d2kd publishes."""

import os
import platform
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ["hardware", "hardware_line", "cpu_model"]


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> Dict[str, bool]:
    """The CPU features that change what kernels run (int8 dot products, wide vectors)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")}


def hardware(device: str = "cpu") -> Dict[str, Any]:
    """The machine and software of this process (torch threads as set now)."""
    import torch

    info: Dict[str, Any] = dict(
        platform=platform.platform(),
        machine=platform.machine(),
        cpu=cpu_model(),
        cpu_count=os.cpu_count(),
        cpu_flags=cpu_flags(),
        torch=torch.__version__,
        python=platform.python_version(),
        device=str(device),
        torch_threads=torch.get_num_threads(),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
    )
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def hardware_line(hw: Optional[Dict[str, Any]], threads: bool = True) -> str:
    """One human line for a :func:`hardware` dict (used in table captions)."""
    if not hw:
        return "hardware not recorded"
    cpu = hw.get("cpu", hw.get("machine", "?"))
    where = hw.get("gpu") or f"{cpu}, {hw.get('cpu_count')} cores"
    n = hw.get("torch_threads", hw.get("threads")) if threads else None
    return (
        f"{hw.get('device', 'cpu')} ({where}"
        + (f", {n} torch threads" if n else "")
        + f"), torch {hw.get('torch', '?')}"
    )
