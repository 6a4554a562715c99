"""Backbone builders the recipes need beyond Detectron2's defaults."""

from .mobilenetv2 import MobileNetV2, build_retinanet_mobilenetv2_fpn_backbone  # noqa: F401
from .resnext import make_resnext_stages

__all__ = ["MobileNetV2", "make_resnext_stages"]
