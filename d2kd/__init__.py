"""d2kd: knowledge distillation for Detectron2 detectors.

A student trained with d2kd is a stock Detectron2 model; the teacher and every KD part live beside it.
"""
from ._deps import require_detectron2

require_detectron2()

__version__ = "0.1.0"
