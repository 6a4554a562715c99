"""Adversarial attacks against a detector's classification loss on its GT boxes (IKD / DFA).

IKD (Liang et al., ACM MM'23, arXiv 2209.09841) trains the student to mimic the teacher's
features on images made adversarial *for the teacher*. The attacks here work on a batch in the
model's normalised input space (``(pixels - pixel_mean) / pixel_std``, padded), take the budget in
0-255 pixel units and convert it per channel (``eps / pixel_std``), and ascend the teacher's
classification loss against the GT instances. Only the input gets a gradient: the model must be
in eval mode with every parameter frozen (``requires_grad=False``), as d2kd's Teacher is.

Methods (``Attack(method=...)``):

* ``fgsm``: one signed step of size ``eps``;
* ``pgd``: random start in the eps-ball, ``steps`` signed steps of ``step``, projection;
* ``mifgsm``: PGD steps on a momentum of L1-normalised gradients (``decay``), no random start;
* ``difgsm`` (the paper's default): MI-FGSM on randomly resized-and-padded inputs (input
  diversity, probability ``diversity_prob``, size in ``[resize_rate * W, W)``).

Departures from the official ``tools/adversarial/difgsm.py`` (flags reproduce them; the full
table is in projects/IKD/README.md):

* the budget is exact in pixels per channel and the image is kept inside the valid pixel range
  ``[0, 255]``; the official rescales ``eps`` by the largest per-channel range of each
  normalised image, its padding included, and clamps each image to its own per-channel range
  (``official_budget=True``: per image, whatever the batch);
* input diversity moves the GT boxes with the resized image; the official scores the diverse
  image against the unmoved boxes (``diversity_boxes=False``);
* the padding of a batch is never perturbed (it is cropped away when images are stored);
* one diversity draw (coin, size, offset) per step is shared by the batch, so the batch stays one
  tensor (the official runs one image at a time), and the offset may reach the far edge.

Per-image quantities (the official budget's range, MI-FGSM's L1 gradient norm) are taken over
the image's *own* padded extent, i.e. what the model's padding gives the image alone, so an
image is attacked the same in a batch as at batch 1 (up to the model's cross-image coupling).

This module knows models only through the arguments it is given: no Distiller, no trainer.
"""

import contextlib
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage
from torch import Tensor, nn

from ..modeling.family import detector_family

__all__ = ["Attack", "ATTACK_METHODS", "teacher_cls_loss", "input_diversity", "own_padded_sizes"]

ATTACK_METHODS = ("fgsm", "pgd", "mifgsm", "difgsm")


@contextlib.contextmanager
def _heads_in_training_mode(modules: Sequence[nn.Module]):
    """Let two-stage heads compute their training losses while the model stays in eval mode.

    Only the ``training`` flag of non-normalisation modules flips, so BatchNorm statistics are
    neither used nor updated differently (mmdet's ``return_loss=True`` on an eval-mode model).
    """
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    flipped = []
    for root in modules:
        for m in root.modules():
            if not m.training and not isinstance(m, norm_types):
                m.training = True
                flipped.append(m)
    try:
        yield
    finally:
        for m in flipped:
            m.training = False


def teacher_cls_loss(
    model: nn.Module,
    images: Tensor,
    image_sizes: List[Tuple[int, int]],
    gt_instances: List[Instances],
    loss_keys: Sequence[str] = ("loss_cls",),
) -> Tensor:
    """The detector's training classification loss on already-normalised images.

    Supports Detectron2 dense detectors (RetinaNet, FCOS: ``forward_training``) and
    GeneralizedRCNN (RPN + RoI heads). Side effects are contained: the losses' event-storage
    scalars go to a private storage, and the dense detectors' running ``loss_normalizer`` is
    left exactly as it was (removed again if the model had none, as before its first step).

    Args:
        model: the detector, eval mode, parameters frozen.
        images: (N, C, H, W) normalised, padded input (requires grad for an attack).
        image_sizes: per-image (h, w) inside the padding.
        gt_instances: per-image Instances with ``gt_boxes`` (in ``images`` pixels) and
            ``gt_classes``, on ``images.device``.
        loss_keys: loss-dict keys summed into the objective (default: the classification loss).

    Returns:
        A scalar tensor.
    """
    family = detector_family(model, owner="Attack")
    image_list = ImageList(images, [tuple(s) for s in image_sizes])
    had_normalizer = "loss_normalizer" in vars(model)
    normalizer = vars(model).get("loss_normalizer")
    try:
        with EventStorage():
            features = model.backbone(images)
            if family == "dense":
                feats = [features[f] for f in model.head_in_features]
                losses = model.forward_training(image_list, feats, model.head(feats), gt_instances)
            else:
                with _heads_in_training_mode([model.proposal_generator, model.roi_heads]):
                    proposals, losses = model.proposal_generator(image_list, features, gt_instances)
                    _, det_losses = model.roi_heads(image_list, features, proposals, gt_instances)
                losses = {**losses, **det_losses}
    finally:
        if had_normalizer:
            model.loss_normalizer = normalizer
        elif "loss_normalizer" in vars(model):
            del model.loss_normalizer
    missing = [k for k in loss_keys if k not in losses]
    if missing:
        raise KeyError(
            f"[Attack] loss keys {missing} not produced by the model; got {list(losses)}"
        )
    return sum(losses[k] for k in loss_keys)


def own_padded_sizes(
    model: nn.Module, image_sizes: Sequence[Tuple[int, int]]
) -> List[Tuple[int, int]]:
    """Each image's padded (h, w) as the model's ``preprocess_image`` would pad it alone.

    Detectron2 pads a batch to its largest image rounded up to ``backbone.size_divisibility``
    (or to ``padding_constraints``); alone, an image gets only its own rounding.
    """
    backbone = getattr(model, "backbone", None)
    divisor = int(getattr(backbone, "size_divisibility", 0) or 0)
    constraints = getattr(backbone, "padding_constraints", None) or {}
    square = int(constraints.get("square_size", 0) or 0)
    divisor = int(constraints.get("size_divisibility", divisor) or 0)
    out = []
    for h, w in image_sizes:
        h, w = (square, square) if square > 0 else (int(h), int(w))
        if divisor > 1:
            h, w = -(-h // divisor) * divisor, -(-w // divisor) * divisor
        out.append((h, w))
    return out


def _extent_mask(x: Tensor, sizes: Sequence[Tuple[int, int]]) -> Tensor:
    """(N, 1, H, W) bool: True inside each image's top-left ``sizes[i]`` region of ``x``."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hs = torch.tensor([int(s[0]) for s in sizes], device=x.device).view(n, 1, 1)
    ws = torch.tensor([int(s[1]) for s in sizes], device=x.device).view(n, 1, 1)
    return ((rows < hs) & (cols < ws)).unsqueeze(1)


def input_diversity(
    x: Tensor,
    boxes: List[Tensor],
    resize_rate: float,
    generator: Optional[torch.Generator] = None,
    move_boxes: bool = True,
) -> Tuple[Tensor, List[Tensor], List[Tuple[int, int]]]:
    """DI-FGSM's transform: resize to a random square ``r x r``, zero-pad to ``W x W``.

    ``r`` is uniform in ``[resize_rate * W, W)`` with ``W`` the padded width (as the official
    code, which squashes non-square inputs); the top and left offsets are uniform in
    ``[0, W - r]`` (the official draws them in ``[0, W - r - 1]``, never touching the far edge).

    Args:
        x: (N, C, H, W) normalised batch.
        boxes: per-image (K_i, 4) XYXY boxes in ``x`` pixels.
        resize_rate: lower bound of ``r / W`` (0.9 in the paper).
        move_boxes: scale and shift the boxes with the image (False: the official behaviour).

    Returns:
        (the (N, C, W, W) diverse batch, per-image boxes, per-image sizes of the valid region).
    """
    h, w = x.shape[-2:]
    low = int(w * resize_rate)
    r = int(torch.randint(low, max(w, low + 1), (1,), generator=generator))
    rem = w - r
    top = int(torch.randint(0, rem + 1, (1,), generator=generator))
    left = int(torch.randint(0, rem + 1, (1,), generator=generator))
    out = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
    out = F.pad(out, (left, rem - left, top, rem - top))
    if move_boxes:
        scale = boxes[0].new_tensor([r / w, r / h, r / w, r / h]) if boxes else None
        shift = boxes[0].new_tensor([left, top, left, top]) if boxes else None
        boxes = [b * scale + shift for b in boxes]
    sizes = [(w, w)] * x.shape[0]
    return out, boxes, sizes


@dataclass
class Attack:
    """An attack configuration; call it on a model and a batch to get adversarial images.

    Args:
        method: one of ``ATTACK_METHODS``.
        eps: L-inf budget in 0-255 pixel units (8 in the paper).
        step: step size in pixel units (2); FGSM uses ``eps``.
        steps: iterations (5); FGSM uses 1.
        decay: momentum decay of MI-/DI-FGSM (1.0).
        diversity_prob: probability of input diversity at each DI-FGSM step (0.5).
        resize_rate: DI's smallest resize ratio (0.9).
        diversity_boxes: move GT boxes with the diverse image (False reproduces the official).
        official_budget: as the official code, per image: rescale eps/step by the largest
            per-channel range of the normalised image (its own padding included) and clip the
            image to its own per-channel min/max.
        loss_keys: the model's loss keys the attack ascends.
    """

    method: str = "difgsm"
    eps: float = 8.0
    step: float = 2.0
    steps: int = 5
    decay: float = 1.0
    diversity_prob: float = 0.5
    resize_rate: float = 0.9
    diversity_boxes: bool = True
    official_budget: bool = False
    loss_keys: Tuple[str, ...] = ("loss_cls",)

    def __post_init__(self):
        if self.method not in ATTACK_METHODS:
            raise ValueError(
                f"[Attack] method '{self.method}' unknown; choose from {ATTACK_METHODS}"
            )
        if self.eps < 0 or self.step <= 0 or self.steps < 1:
            raise ValueError(
                f"[Attack] need eps >= 0, step > 0, steps >= 1; got eps={self.eps}, "
                f"step={self.step}, steps={self.steps}"
            )
        self.loss_keys = tuple(self.loss_keys)

    def settings(self) -> Dict[str, object]:
        """Plain settings for manifests and logs."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @staticmethod
    def check_model(model: nn.Module) -> None:
        """The attack needs a frozen model in eval mode; say which rule is broken."""
        if model.training:
            raise ValueError(f"[Attack] the model ({type(model).__name__}) must be in eval mode")
        for name, p in model.named_parameters():
            if p.requires_grad:
                raise ValueError(
                    f"[Attack] model parameter '{name}' requires grad; freeze the model "
                    "(requires_grad_(False)): the attack differentiates w.r.t. the input only"
                )

    def _budget(self, model: nn.Module, x: Tensor, own: Tensor):
        """(eps, step, lower, upper) in normalised units.

        Default: per channel, each (1, C, 1, 1). Official: per image, eps and step (N, 1, 1, 1)
        and bounds (N, C, 1, 1) from each image's own padded extent ``own`` (N, 1, H, W).
        """
        mean = model.pixel_mean.view(1, -1, 1, 1).to(x)
        std = model.pixel_std.view(1, -1, 1, 1).to(x)
        if self.official_budget:
            lo = x.masked_fill(~own, float("inf")).amin(dim=(2, 3), keepdim=True)
            hi = x.masked_fill(~own, float("-inf")).amax(dim=(2, 3), keepdim=True)
            span = (hi - lo).amax(dim=1, keepdim=True)
            return self.eps / 255 * span, self.step / 255 * span, lo, hi
        return self.eps / std, self.step / std, (0 - mean) / std, (255 - mean) / std

    def perturb(
        self,
        model: nn.Module,
        images: Tensor,
        image_sizes: List[Tuple[int, int]],
        gt_instances: List[Instances],
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        """Adversarial version of a normalised, padded batch.

        Args:
            model: frozen detector in eval mode (see :meth:`check_model`).
            images: (N, C, H, W) normalised batch (e.g. ``model.preprocess_image(...).tensor``).
            image_sizes: per-image (h, w) inside the padding; the padding is left untouched.
            gt_instances: per-image GT (``gt_boxes`` in input pixels, ``gt_classes``).
            generator: torch RNG for random starts and input diversity (reproducible runs).

        Returns:
            (N, C, H, W) detached adversarial batch; ``|x_adv - x| <= eps / pixel_std``.
        """
        self.check_model(model)
        x = images.detach()
        valid = _extent_mask(x, image_sizes).to(x.dtype)  # (N, 1, H, W)
        own = _extent_mask(x, own_padded_sizes(model, image_sizes))
        eps, step, lo, hi = self._budget(model, x, own)
        steps, step = (1, eps) if self.method == "fgsm" else (self.steps, step)
        boxes = [inst.gt_boxes.tensor for inst in gt_instances]
        delta = torch.zeros_like(x)
        if self.method == "pgd":
            u = torch.rand(x.shape, generator=generator, device="cpu").to(x)
            delta = (u * 2 - 1) * eps * valid
            delta = (x + delta).clamp(lo, hi) - x
        momentum = torch.zeros_like(x)
        for _ in range(steps):
            grad = self._gradient(model, x + delta, image_sizes, gt_instances, boxes, generator)
            if self.method in ("mifgsm", "difgsm"):
                # Each image's L1 norm over its own padded extent, as it would be alone.
                l1 = (grad * own).abs().sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
                grad = grad / l1 + self.decay * momentum
                momentum = grad
            delta = delta + step * grad.sign() * valid
            delta = torch.max(torch.min(delta, eps), -eps)
            delta = (x + delta).clamp(lo, hi) - x
        return (x + delta * valid).detach()

    def _gradient(self, model, x_adv, image_sizes, gt_instances, boxes, generator) -> Tensor:
        """d loss / d input at ``x_adv`` (with input diversity for DI-FGSM)."""
        with torch.enable_grad():
            x_in = x_adv.detach().requires_grad_(True)
            inp, sizes, targets = x_in, image_sizes, gt_instances
            use_di = self.method == "difgsm" and self.diversity_prob > 0
            if use_di and float(torch.rand((1,), generator=generator)) < self.diversity_prob:
                inp, moved, sizes = input_diversity(
                    x_in, boxes, self.resize_rate, generator, self.diversity_boxes
                )
                targets = []
                for inst, b, size in zip(gt_instances, moved, sizes):
                    t = Instances(size)
                    t.gt_boxes = Boxes(b)
                    t.gt_classes = inst.gt_classes
                    targets.append(t)
            loss = teacher_cls_loss(model, inp, sizes, targets, self.loss_keys)
            (grad,) = torch.autograd.grad(loss, x_in)
        return grad

    def __call__(
        self,
        model: nn.Module,
        batched_inputs: List[Dict[str, object]],
        generator: Optional[torch.Generator] = None,
        image_key: str = "image",
    ) -> List[Tensor]:
        """Adversarial pixel images for a Detectron2 batch.

        Args:
            model: frozen detector in eval mode; its own ``preprocess_image`` normalises.
            batched_inputs: dicts with ``image_key`` ((C, H, W) pixels in the model's format)
                and "instances".
            generator: torch RNG (see :meth:`perturb`).
            image_key: which entry holds the image to attack.

        Returns:
            Per-image (C, H, W) uint8 tensors on the model's device, same size as the input.
        """
        inputs = [{"image": x[image_key]} for x in batched_inputs]
        images = model.preprocess_image(inputs)
        device = images.tensor.device
        gts = [x["instances"].to(device) for x in batched_inputs]
        adv = self.perturb(model, images.tensor, images.image_sizes, gts, generator)
        mean = model.pixel_mean.view(1, -1, 1, 1).to(adv)
        std = model.pixel_std.view(1, -1, 1, 1).to(adv)
        pixels = (adv * std + mean).round().clamp(0, 255).to(torch.uint8)
        return [pixels[i, :, :h, :w] for i, (h, w) in enumerate(images.image_sizes)]
