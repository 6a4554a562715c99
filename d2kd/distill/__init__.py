"""The distillation core: Distiller, Teacher, taps, adapters, schedules and KD term bases."""

from .adapters import conv_adapter, linear_adapter
from .adversarial_term import AdversarialFeatureTerm
from .dfad_term import DFADTerm
from .distiller import Distiller, current_iteration
from .feature_mse import FeatureMSETerm
from .fgd_term import FGDTerm
from .guard import check_finite
from .head_term import AKDTerm, CKDTerm, HEADAssistTerm
from .mimic_term import RCNNMimicTerm, RetinaNetMimicTerm
from .schedule import Constant, LinearWarmup, Window
from .taps import Taps
from .teacher import KeyReport, Teacher, TeacherLoadError, inherit_from_teacher
from .term import FeatureLevelTerm, KDContext, KDTerm

__all__ = [
    "AdversarialFeatureTerm",
    "AKDTerm",
    "CKDTerm",
    "HEADAssistTerm",
    "Constant",
    "DFADTerm",
    "Distiller",
    "FGDTerm",
    "FeatureLevelTerm",
    "FeatureMSETerm",
    "KDContext",
    "KDTerm",
    "KeyReport",
    "LinearWarmup",
    "RCNNMimicTerm",
    "RetinaNetMimicTerm",
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
