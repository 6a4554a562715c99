"""Datasets for d2kd. Importing this package registers the builtin synthetic datasets.

Registered (lazily: nothing is rendered until a split is first loaded):
``synth_{train,val}`` (3000/500 images), ``synth_small_{train,val}`` (600/100) and
``synth_tiny_{train,val}`` (16/8, for tests).
"""

from .adversarial import Attack  # noqa: F401
from .adversarial_mapper import AdversarialPairMapper, build_adversarial_train_loader  # noqa: F401
from .noise import NoiseLoader  # noqa: F401
from .synthetic import (
    DATASET_VERSION,
    SYNTHETIC_CLASSES,
    SYNTHETIC_COLORS,
    SyntheticSpec,
    ensure_registered_rendered,
    register_builtin,
    register_synthetic,
    render_synthetic,
)

__all__ = [
    "DATASET_VERSION",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_COLORS",
    "SyntheticSpec",
    "ensure_registered_rendered",
    "register_builtin",
    "register_synthetic",
    "render_synthetic",
]

register_builtin()
