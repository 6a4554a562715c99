"""The distillation core: Distiller, Teacher, taps, adapters, schedules and the KD term base.

Each method's term lives in its own module of :mod:`d2kd.distill.terms` and is imported from
there (``from d2kd.distill.terms.fgd import FGDTerm``): adding a method touches no list here.
"""

from .adapters import conv_adapter, linear_adapter
from .distiller import Distiller, current_iteration
from .guard import check_finite
from .schedule import Constant, LinearWarmup, Window
from .taps import Taps
from .teacher import KeyReport, Teacher, TeacherLoadError, inherit_from_teacher
from .term import FeatureLevelTerm, KDContext, KDTerm

__all__ = [
    "Constant",
    "Distiller",
    "FeatureLevelTerm",
    "KDContext",
    "KDTerm",
    "KeyReport",
    "LinearWarmup",
    "Taps",
    "Teacher",
    "TeacherLoadError",
    "Window",
    "check_finite",
    "conv_adapter",
    "current_iteration",
    "inherit_from_teacher",
    "linear_adapter",
]
