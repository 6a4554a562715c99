"""CWD as a KD term: channel-wise KL between stride-matched student and teacher FPN levels."""

from typing import Callable, Dict, Optional, Sequence

from torch import Tensor

from ...losses.cwd import cwd_loss
from ..probes import ProbeInputs, cost_probe
from ..term import FeatureLevelTerm, KDContext

__all__ = ["CWDTerm"]


class CWDTerm(FeatureLevelTerm):
    """Channel-wise distillation (Shu et al., ICCV'21) on stride-matched FPN levels.

    A 1x1 conv adapter maps student channels to the teacher's where they differ (trained with the
    student; part of the term, never of the student), then :func:`~d2kd.losses.cwd.cwd_loss`
    compares each level's channel-wise spatial distributions. Loss keys ``loss_<name>_<level>``
    (e.g. ``loss_cwd_p3``), unweighted: the Distiller applies the term's weight (the official
    RetinaNet config: 5.0 on every level).

    Args:
        levels: FPN levels to distil; None means every level both backbones output. The official
            RetinaNet config distils P3-P6.
        tau: softmax temperature (the official detection configs: 1.0).
        name: the method name in loss keys.
    """

    owner = "CWD"
    adapt = True

    def __init__(self, levels: Optional[Sequence[str]] = None, tau: float = 1.0, name: str = "cwd"):
        super().__init__(levels)
        if not tau > 0:
            raise ValueError(f"[{self.owner}] tau must be > 0, got {tau}")
        self.tau = float(tau)
        self.name = name

    def forward(self, ctx: KDContext) -> Dict[str, Tensor]:
        return {
            f"loss_{self.name}_{level}": cwd_loss(fs, ft, self.tau)
            for level, fs, ft in self.adapted_pairs(ctx)
        }

    @classmethod
    def cost_probes(cls, inputs: ProbeInputs) -> Dict[str, Callable[[], Tensor]]:
        """``cwd``: the pure loss at tau 1 summed over every level (equal channels: no
        adapter), as the other feature terms' probes."""
        s, t = inputs.student, inputs.teacher
        return {"cwd": cost_probe(lambda: sum(cwd_loss(s[k], t[k]) for k in s), s)}
