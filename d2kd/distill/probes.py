"""Cost probes: how each KD term says to time its own loss, for ``benchmarks/loss_cost.py``.

A term overrides :meth:`d2kd.distill.term.KDTerm.cost_probes` and builds its closures with
:func:`cost_probe` on the shared seeded inputs of :class:`ProbeInputs`, so the benchmark finds
every term's probe without a list of its own.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = ["ProbeShapes", "ProbeInputs", "COCO_SHAPES", "QUICK_SHAPES", "cost_probe"]


@dataclass(frozen=True)
class ProbeShapes:
    """Sizes of the synthetic inputs a cost probe runs on.

    Attributes:
        padded_hw: (H, W) of the padded batch tensor.
        image_sizes: per-image (h, w) before padding; the batch size is their number.
        channels: channels of every FPN level, student and teacher alike.
        levels: FPN level names.
        strides: the levels' strides (a level's map is ceil(H / stride) x ceil(W / stride)).
        boxes_per_image: GT boxes per image.
    """

    padded_hw: Tuple[int, int] = (800, 1344)
    image_sizes: Tuple[Tuple[int, int], ...] = ((800, 1333), (736, 1333))
    channels: int = 256
    levels: Tuple[str, ...] = ("p3", "p4", "p5", "p6", "p7")
    strides: Tuple[int, ...] = (8, 16, 32, 64, 128)
    boxes_per_image: int = 30

    @property
    def batch(self) -> int:
        return len(self.image_sizes)

    def level_hw(self) -> Dict[str, Tuple[int, int]]:
        """Level name -> (H_l, W_l) of its map."""
        h, w = self.padded_hw
        return {k: (-(-h // s), -(-w // s)) for k, s in zip(self.levels, self.strides)}


# COCO at Detectron2's training size: 2 images of 800 x 1333 (the second one shorter, as in real
# batches) padded to a multiple of 32, RetinaNet's P3-P7 at 256 channels, 30 GT boxes per image.
COCO_SHAPES = ProbeShapes()
# The same layout on small maps and 32 channels, for smoke runs.
QUICK_SHAPES = ProbeShapes(padded_hw=(256, 384), image_sizes=((256, 380), (224, 352)), channels=32)


@dataclass
class ProbeInputs:
    """Seeded synthetic FPN maps and GT boxes, shared by every term's cost probe.

    Attributes:
        shapes: their sizes.
        device: where the tensors live.
        student: level -> (N, C, H_l, W_l) maps requiring grad (leaves).
        teacher: level -> (N, C, H_l, W_l) maps.
        boxes: N tensors (K, 4), xyxy in input pixels inside each image, many small, a few large.
    """

    shapes: ProbeShapes
    device: str
    student: Dict[str, Tensor]
    teacher: Dict[str, Tensor]
    boxes: List[Tensor]

    @classmethod
    def synthetic(
        cls, shapes: ProbeShapes = COCO_SHAPES, device: str = "cpu", seed: int = 0
    ) -> "ProbeInputs":
        """Draw the inputs from one CPU generator (the same values on every device)."""
        g = torch.Generator().manual_seed(seed)
        boxes = []
        for h, w in shapes.image_sizes:
            size = torch.tensor([w, h])
            xy = torch.rand(shapes.boxes_per_image, 2, generator=g) * size
            wh = torch.rand(shapes.boxes_per_image, 2, generator=g) ** 2 * size / 2
            b = torch.cat([xy, xy + wh], dim=1)
            b[:, 0::2] = b[:, 0::2].clamp(0, w)
            b[:, 1::2] = b[:, 1::2].clamp(0, h)
            boxes.append(b.to(device))
        hws = shapes.level_hw()

        def maps() -> Dict[str, Tensor]:
            return {
                k: torch.randn(shapes.batch, shapes.channels, *hw, generator=g).to(device)
                for k, hw in hws.items()
            }

        student = {k: v.requires_grad_(True) for k, v in maps().items()}
        return cls(shapes, str(device), student, maps(), boxes)

    @property
    def image_sizes(self) -> List[Tuple[int, int]]:
        return [tuple(s) for s in self.shapes.image_sizes]

    @property
    def padded_hw(self) -> Tuple[int, int]:
        return tuple(self.shapes.padded_hw)

    def rows(self, n: int, dim: int, seed: int) -> Tuple[Tensor, Tensor]:
        """(student (n, dim) requiring grad, teacher (n, dim)) feature rows, seeded."""
        g = torch.Generator().manual_seed(seed)
        s = torch.randn(n, dim, generator=g).to(self.device).requires_grad_(True)
        return s, torch.randn(n, dim, generator=g).to(self.device)


def cost_probe(
    compute: Callable[[], Tensor], *leaves: Union[Tensor, nn.Module, Dict[str, Tensor]]
) -> Callable[[], Tensor]:
    """A probe for :meth:`KDTerm.cost_probes`: clears the gradients of ``leaves`` (tensors, dicts
    of tensors, modules' parameters), then returns ``compute()``, so repeated calls time the same
    work and never accumulate gradients."""
    tensors: List[Tensor] = []
    for leaf in leaves:
        if isinstance(leaf, nn.Module):
            tensors.extend(leaf.parameters())
        elif isinstance(leaf, dict):
            tensors.extend(leaf.values())
        else:
            tensors.append(leaf)

    def probe() -> Tensor:
        for t in tensors:
            t.grad = None
        return compute()

    return probe
