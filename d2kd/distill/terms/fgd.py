"""FGD as a KD term: pairs FPN levels and feeds the pure FGD loss with GT boxes and image sizes."""

from typing import Callable, Dict, Optional, Sequence

import torch
from detectron2.utils.events import get_event_storage
from torch import Tensor

from ...losses.fgd import RETINANET_HPARAMS, FGDLoss
from ..probes import ProbeInputs, cost_probe
from ..term import FeatureLevelTerm, KDContext

__all__ = ["FGDTerm"]


class FGDTerm(FeatureLevelTerm):
    """Focal and global distillation (Yang et al., CVPR'22) on stride-matched FPN levels.

    The loss's own alpha/beta/gamma/lambda weight its parts as in the official code; the
    Distiller's weight for this term scales them all together (the maintainers' advice when
    moving to another data scale: keep the ratios, rescale together). Loss keys
    ``loss_<name>_<level>``; the unweighted parts go to the event storage as
    ``kd/<name>/<level>/{fg,bg,at,global}``.

    Args:
        levels: FPN levels (RetinaNet: p3-p7; Faster R-CNN: p2-p5 as the official configs).
        temp, alpha, beta, gamma, lam: FGD's temperature and term weights (defaults: the
            official RetinaNet configs).
        official_mapping: map boxes to the grid with each image's unpadded size, reproducing the
            official code; the default maps by stride on the padded tensor.
        name: method name in loss keys.
    """

    owner = "FGD"

    def __init__(
        self,
        levels: Optional[Sequence[str]] = None,
        temp: float = RETINANET_HPARAMS["temp"],
        alpha: float = RETINANET_HPARAMS["alpha_fgd"],
        beta: float = RETINANET_HPARAMS["beta_fgd"],
        gamma: float = RETINANET_HPARAMS["gamma_fgd"],
        lam: float = RETINANET_HPARAMS["lambda_fgd"],
        official_mapping: bool = False,
        name: str = "fgd",
    ):
        super().__init__(levels)
        self.hparams = dict(
            temp=temp, alpha_fgd=alpha, beta_fgd=beta, gamma_fgd=gamma, lambda_fgd=lam
        )
        self.official_mapping = official_mapping
        self.name = name

    def build(self) -> None:
        self.loss = FGDLoss(
            {k: cs for k, (cs, _) in self.channels.items()},
            {k: ct for k, (_, ct) in self.channels.items()},
            key_prefix=f"loss_{self.name}_",
            official_mapping=self.official_mapping,
            **self.hparams,
        )

    def forward(self, ctx: KDContext) -> Dict[str, Tensor]:
        pairs = list(self.level_pairs(ctx))  # validates spatial sizes, naming the level
        losses, parts = self.loss.compute(
            {k: fs for k, fs, _ in pairs},
            {k: ft for k, _, ft in pairs},
            ctx.gt_boxes,
            ctx.image_sizes,
            ctx.padded_hw,
        )
        try:
            storage = get_event_storage()
        except AssertionError:
            storage = None
        if storage is not None and parts:
            values = torch.stack([v.float() for v in parts.values()]).tolist()  # one host sync
            storage.put_scalars(**{f"kd/{self.name}/{k}": v for k, v in zip(parts, values)})
        return losses

    @classmethod
    def cost_probes(cls, inputs: ProbeInputs) -> Dict[str, Callable[[], Tensor]]:
        """``fgd``: :class:`FGDLoss` with the official RetinaNet values over every level, its
        GcBlocks included (equal channels: no align conv)."""
        channels = {k: v.shape[1] for k, v in inputs.student.items()}
        loss = FGDLoss(channels, channels, **RETINANET_HPARAMS).to(inputs.device)

        def compute() -> Tensor:
            args = (inputs.boxes, inputs.image_sizes, inputs.padded_hw)
            return sum(loss(inputs.student, inputs.teacher, *args).values())

        return {"fgd": cost_probe(compute, inputs.student, loss)}
