"""The plain FPN feature-MSE term: the simplest KD term, and the base later methods extend."""

from typing import Callable, Dict, Optional, Sequence

from torch import Tensor

from ...losses.feature import feature_mse
from ..probes import ProbeInputs, cost_probe
from ..term import FeatureLevelTerm, KDContext

__all__ = ["FeatureMSETerm"]


class FeatureMSETerm(FeatureLevelTerm):
    """MSE between stride-matched student and teacher FPN levels.

    A 1x1 conv adapter maps student channels to the teacher's where they differ.
    Loss keys: ``loss_<name>_<level>`` (e.g. ``loss_mse_p3``).

    Args:
        levels: levels to distil; None means every level both backbones output.
        name: the method name used in loss keys.
    """

    owner = "FeatureMSE"
    adapt = True

    def __init__(self, levels: Optional[Sequence[str]] = None, name: str = "mse"):
        super().__init__(levels)
        self.name = name

    def forward(self, ctx: KDContext) -> Dict[str, Tensor]:
        return {
            f"loss_{self.name}_{level}": feature_mse(fs, ft)
            for level, fs, ft in self.adapted_pairs(ctx)
        }

    @classmethod
    def cost_probes(cls, inputs: ProbeInputs) -> Dict[str, Callable[[], Tensor]]:
        """``mse``: the pure loss summed over every level (equal channels: no adapter)."""
        s, t = inputs.student, inputs.teacher
        return {"mse": cost_probe(lambda: sum(feature_mse(s[k], t[k]) for k in s), s)}
