"""Export the distilled student alone: stock checkpoint, ONNX, parity gate, latency.

A distillation run ends with a student that must stand on its own: no teacher, adapter or
trainer state in the file users load, and graphs checked against PyTorch before anyone trusts
them. :func:`export_student` (``tools/export_student.py``) does that; the latency benchmark
(``tools/benchmark_latency.py``) lives in :mod:`d2kd.export.latency`. The README's "Export and
latency" section describes the outputs and the gate.

Import rule: this package needs a model and weights, never a trainer or a KD loss.
"""

from .errors import ExportError, GateFailed
from .pipeline import export_student, load_recipe
from .strip import student_node

__all__ = ["ExportError", "GateFailed", "export_student", "load_recipe", "student_node"]
