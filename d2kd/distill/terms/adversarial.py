"""IKD's adversarial feature term: the student mimics the teacher's FPN on adversarial images."""

import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from detectron2.utils.events import get_event_storage
from torch import Tensor

from ...losses.adversarial import adversarial_feature_loss
from ..schedule import Window
from ..term import FeatureLevelTerm, KDContext

__all__ = ["AdversarialFeatureTerm"]


class AdversarialFeatureTerm(FeatureLevelTerm):
    """``sum_l sum((F^S_adv,l - F^T_adv,l)^2) / N`` over FPN levels (IKD's AdvFeatureLoss).

    The adversarial images come either from the batch (offline: the paired mapper puts each
    image's stored adversarial copy under ``image_key``) or from an attack against the teacher
    run here on the fly (online: :meth:`configure` with an ``attack``). The adversarial images get
    no detection loss; the student and the teacher each run their own preprocessing and backbone
    on them (the teacher under ``no_grad``, eval mode). Outside the active window, or when the
    batch holds no adversarial image, the losses are zeros (keys stay the same for logging and
    DDP).

    The window (a :class:`~d2kd.distill.schedule.Window`, on where it is non-zero) and the online
    settings are set by the ``AdversarialAugmentation`` hook, which hands its one ``Window``
    object to this term and to the paired mapper, so the three cannot disagree. Without the hook
    the term is always on. Loss keys: ``loss_<name>_<level>``; the Distiller applies the weight
    (the paper's configs: 1e-5 for RetinaNet/RepPoints, 2.5e-7 for Mask R-CNN).

    Args:
        levels: FPN levels (RetinaNet: p3-p7, the official ``layer_idx`` 0-4).
        name: method name in loss keys.
        image_key: batch key of the stored adversarial image.
    """

    owner = "IKD"
    adapt = True  # the official AdvFeatureLoss aligns channels with a 1x1 conv where they differ

    def __init__(
        self,
        levels: Optional[Sequence[str]] = None,
        name: str = "ikd_adv",
        image_key: str = "adv_image",
    ):
        super().__init__(levels)
        self.name = name
        self.image_key = image_key
        self.window = Window()
        self.attack: Optional[Callable] = None
        self.fraction = 1.0
        self.regenerate_every = 1
        self.replay: Optional[List[Tensor]] = None
        self._replay_iter: Optional[int] = None

    def configure(
        self,
        window: Window,
        attack: Optional[Callable] = None,
        fraction: float = 1.0,
        regenerate_every: int = 1,
    ) -> None:
        """Set the active window and, for online mode, the attack.

        Args:
            window: on where ``window(iteration) != 0`` (kept by reference: the hook's object).
            attack: callable ``(teacher, batched_inputs) -> [uint8 (C, H, W)]`` (a
                ``d2kd.data.adversarial.Attack``); None reads adversarial images from the batch.
            fraction: share of each batch attacked online (the first ``ceil(f * N)`` images of
                the shuffled batch).
            regenerate_every: attack every k-th active iteration; in between, the last generated
                adversarial images are replayed (the loss needs no GT boxes, so they stay valid
                adversarial inputs for the teacher).
        """
        if not isinstance(window, Window):
            raise TypeError(f"[IKD] window must be a d2kd.distill.schedule.Window, got {window!r}")
        if not 0 < fraction <= 1 or regenerate_every < 1:
            raise ValueError(
                f"[IKD] need 0 < fraction <= 1 and regenerate_every >= 1, got {fraction}, "
                f"{regenerate_every}"
            )
        self.window = window
        self.attack, self.fraction, self.regenerate_every = attack, fraction, regenerate_every

    def is_active(self, iteration: int) -> bool:
        return self.window(iteration) != 0

    def _online_images(self, ctx: KDContext) -> List[Tensor]:
        due = (ctx.iteration - self.window.start) % self.regenerate_every == 0
        if self.replay is None or due:
            count = max(1, math.ceil(self.fraction * len(ctx.batched_inputs)))
            # Attack the image before IKD's Gaussian noise when the mapper applied it
            # ("attack_image"): the official adversarial copies are made from clean images.
            sources = [
                {"image": x.get("attack_image", x["image"]), "instances": x["instances"]}
                for x in ctx.batched_inputs[:count]
            ]
            self.replay = self.attack(ctx.teacher, sources)
            self._replay_iter = ctx.iteration
        return self.replay

    def adversarial_images(self, ctx: KDContext) -> List[Tensor]:
        """The (C, H, W) pixel images the loss runs on this step (empty when inactive)."""
        if not self.is_active(ctx.iteration):
            return []
        if self.attack is not None:
            return self._online_images(ctx)
        return [x[self.image_key] for x in ctx.batched_inputs if self.image_key in x]

    def _zeros(self, ctx: KDContext) -> Dict[str, Tensor]:
        out = {}
        for level in self.levels:
            zero = ctx.student_features[level].new_zeros(())
            for p in self.adapters[level].parameters():
                zero = zero + (p * 0).sum()  # keeps adapters in the graph for DDP
            out[f"loss_{self.name}_{level}"] = zero
        return out

    def forward(self, ctx: KDContext) -> Dict[str, Tensor]:
        images = self.adversarial_images(ctx)
        if not images:
            return self._zeros(ctx)
        inputs: List[Dict[str, Any]] = [{"image": im} for im in images]
        teacher = ctx.teacher
        with torch.no_grad():
            t_feats = teacher.backbone(teacher.preprocess_image(inputs).tensor)
        s_feats = ctx.student.backbone(ctx.student.preprocess_image(inputs).tensor)
        losses = {}
        for level in self.levels:
            fs, ft = s_feats[level], t_feats[level]
            if fs.shape[-2:] != ft.shape[-2:]:
                raise ValueError(
                    f"[IKD] level '{level}': student map {tuple(fs.shape)} and teacher map "
                    f"{tuple(ft.shape)} differ in spatial size on the adversarial images"
                )
            losses[f"loss_{self.name}_{level}"] = adversarial_feature_loss(
                self.adapters[level](fs), ft
            )
        try:
            get_event_storage().put_scalar(f"kd/{self.name}/images", float(len(images)))
        except AssertionError:
            pass
        return losses
