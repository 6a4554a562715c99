"""Backbone builders the recipes need beyond Detectron2's defaults."""

from .resnext import make_resnext_stages

__all__ = ["make_resnext_stages"]
