"""What a KD term sees (:class:`KDContext`) and the base classes every term derives from.

Also the cost-probe hook (:meth:`KDTerm.cost_probes`, see :mod:`d2kd.distill.probes`): each
term says how to time its own loss on synthetic COCO-like inputs, so ``benchmarks/loss_cost.py``
finds every term's probe without a list of its own.
"""

from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.structures import ImageList, Instances
from torch import Tensor, nn

from .adapters import conv_adapter

if TYPE_CHECKING:  # the probes module is for benchmarks; terms import it themselves
    from .probes import ProbeInputs

__all__ = ["KDContext", "KDTerm", "FeatureLevelTerm"]


class KDContext:
    """Everything a KD term may read during one training step.

    The teacher's features are computed lazily, once, under ``torch.no_grad()`` and in eval mode,
    and only when a term asks: a term that needs nothing from the teacher costs no teacher compute.

    Attributes:
        batched_inputs: the Detectron2 training batch (list of dicts with "image" and "instances").
        student: the student detector (a stock Detectron2 model).
        teacher: the frozen teacher detector.
        student_outputs: outputs of the student's tapped submodules, keyed by module path.
        student_inputs: positional inputs of those submodules, keyed by module path.
        iteration: the training iteration (from the event storage).
        student_all_outputs: every call's output of each tapped submodule, in call order (for
            modules run once per level, e.g. ``head.cls_subnet``).
    """

    def __init__(
        self,
        batched_inputs: List[Dict[str, Any]],
        student: nn.Module,
        teacher: Optional[nn.Module],
        student_outputs: Dict[str, Any],
        student_inputs: Dict[str, Tuple[Any, ...]],
        iteration: int,
        student_all_outputs: Optional[Dict[str, List[Any]]] = None,
    ):
        self.batched_inputs = batched_inputs
        self.student = student
        self.teacher = teacher
        self.student_outputs = student_outputs
        self.student_inputs = student_inputs
        self.iteration = iteration
        self.student_all_outputs = student_all_outputs or {}
        self._teacher_images = None
        self._teacher_features: Optional[Dict[str, Tensor]] = None

    @property
    def device(self) -> torch.device:
        return next(self.student.parameters()).device

    @property
    def student_features(self) -> Dict[str, Tensor]:
        """The student's backbone (FPN) outputs: level name -> (N, C_s, H, W)."""
        return self.student_outputs["backbone"]

    @property
    def padded_hw(self) -> Tuple[int, int]:
        """(H, W) of the padded image tensor fed to the student's backbone."""
        return tuple(self.student_inputs["backbone"][0].shape[-2:])

    @property
    def image_sizes(self) -> List[Tuple[int, int]]:
        """Per-image (h, w) before padding, in input pixels."""
        return [tuple(x["image"].shape[-2:]) for x in self.batched_inputs]

    @cached_property
    def gt_instances(self) -> List[Instances]:
        """Ground-truth instances on the student's device (moved once per step)."""
        return [x["instances"].to(self.device) for x in self.batched_inputs]

    @property
    def gt_boxes(self) -> List[Tensor]:
        """Per-image GT boxes (K_i, 4), XYXY in input pixels."""
        return [inst.gt_boxes.tensor for inst in self.gt_instances]

    def _require_teacher(self) -> nn.Module:
        if self.teacher is None:
            raise RuntimeError("[KDContext] this Distiller has no teacher (teacher=None)")
        return self.teacher

    def teacher_images(self):
        """The batch normalised and padded by the teacher's own preprocessing (an ImageList).

        When the student padded its batch further (e.g. a RetinaNet with P7 pads to multiples
        of 128, a Faster R-CNN teacher to 32), the teacher's tensor gets the same extra zero
        padding at the bottom and right, which is what its own preprocessing would have produced
        with the student's size divisibility: their feature maps then align cell for cell. RoI
        terms are unaffected either way (boxes are in input pixels).
        """
        self._require_teacher()
        if self._teacher_images is None:
            images = self.teacher.preprocess_image(self.batched_inputs)
            if "backbone" in self.student_inputs:
                images = _pad_to(images, self.padded_hw)
            self._teacher_images = images
        return self._teacher_images

    def teacher_features(self) -> Dict[str, Tensor]:
        """The teacher's backbone (FPN) outputs, computed once, without gradient."""
        if self._teacher_features is None:
            teacher = self._require_teacher()
            with torch.no_grad():
                self._teacher_features = teacher.backbone(self.teacher_images().tensor)
        return self._teacher_features


def _pad_to(images: ImageList, hw: Tuple[int, int]) -> ImageList:
    """Zero-pad an ImageList's tensor at the bottom/right up to ``hw`` (never crops)."""
    h, w = images.tensor.shape[-2:]
    if h >= hw[0] and w >= hw[1]:
        return images
    padded = F.pad(images.tensor, (0, max(0, hw[1] - w), 0, max(0, hw[0] - h)))
    return ImageList(padded, images.image_sizes)


class KDTerm(nn.Module):
    """A distillation term: reads a :class:`KDContext`, returns named unweighted losses.

    Subclasses list the student submodules they read in ``student_taps`` and may build
    shape-dependent parts (adapters) in :meth:`setup`, which the Distiller calls once with the
    built student and teacher, before the optimizer exists. Loss keys follow
    ``loss_<method>[_<term>|_<level>]``; the Distiller applies the term's weight.
    """

    student_taps: Tuple[str, ...] = ()

    def setup(self, student: nn.Module, teacher: Optional[nn.Module]) -> None:
        """Validate against the built models and create shape-dependent modules.

        Runs at construction, before any weights are loaded: anything that depends on the
        teacher's trained weights belongs in :meth:`on_teacher_loaded`.
        """

    def on_teacher_loaded(self, teacher: Optional[nn.Module]) -> None:
        """Called once the teacher's weights are loaded, before training starts.

        For state derived from the trained teacher (e.g. LSHFM's projection scale); keep it in
        buffers so a resumed run restores it from the checkpoint's "distill" state.
        """

    def forward(self, ctx: KDContext) -> Dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss_keys(self) -> Optional[List[str]]:
        """The keys :meth:`forward` returns at every step, once :meth:`setup` has run.

        None (the default) when the term does not declare them. ``tests/test_recipes.py`` checks
        that a recipe's training logs exactly its student's losses and these keys, so a recipe
        whose terms all declare them needs no hand-written entry there.
        """
        return None

    @classmethod
    def cost_probes(cls, inputs: "ProbeInputs") -> Dict[str, Callable[[], Tensor]]:
        """How to time this term's loss (``benchmarks/loss_cost.py``), on synthetic inputs.

        A term that overrides this returns named closures (e.g. one per mode), each built from
        :func:`cost_probe`: a call computes the term's pure loss on ``inputs`` with the parts it
        needs at those shapes (its own parameters, fixed-size rows from :meth:`ProbeInputs.rows`)
        and returns the scalar to backpropagate. The benchmark times the call (forward) and the
        scalar's ``backward()``. The base class has no probe, and the benchmark skips such terms.

        Args:
            inputs: the FPN maps and GT boxes every term's probe shares.

        Returns:
            probe name (a loss-cost table row, e.g. ``"fgd"``) -> closure.
        """
        return {}


def _backbone_shapes(model: nn.Module, role: str, owner: str) -> Dict[str, ShapeSpec]:
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "output_shape"):
        raise TypeError(f"[{owner}] the {role} ({type(model).__name__}) has no Detectron2 backbone")
    return backbone.output_shape()


class FeatureLevelTerm(KDTerm):
    """Base for terms that compare student and teacher feature maps level by level (e.g. FPN).

    Levels are paired by name and must have the same stride; channels may differ (subclasses
    decide how to adapt them). ``setup`` fills ``self.levels`` and ``self.channels``
    (level -> (C_s, C_t)) and then calls :meth:`build`.

    Args:
        levels: level names to distil (e.g. ``["p3", "p4"]``); None means every level the student
            and the teacher both have.
    """

    student_taps = ("backbone",)
    owner = "FeatureLevelTerm"
    name: Optional[str] = None  # the method name in loss keys; subclasses set it
    # True: ``setup`` builds ``self.adapters`` (level -> 1x1 conv from the student's channels to
    # the teacher's, identity where they agree), trained with the student.
    adapt = False

    def __init__(self, levels: Optional[Sequence[str]] = None):
        super().__init__()
        self.requested_levels = list(levels) if levels is not None else None
        self.levels: List[str] = []
        self.channels: Dict[str, Tuple[int, int]] = {}
        self.adapters = nn.ModuleDict()

    def setup(self, student: nn.Module, teacher: nn.Module) -> None:
        s_shapes = _backbone_shapes(student, "student", self.owner)
        t_shapes = _backbone_shapes(teacher, "teacher", self.owner)
        levels = self.requested_levels or [k for k in s_shapes if k in t_shapes]
        if not levels:
            raise ValueError(
                f"[{self.owner}] student levels {list(s_shapes)} and teacher levels "
                f"{list(t_shapes)} have none in common"
            )
        for level in levels:
            for role, shapes in (("student", s_shapes), ("teacher", t_shapes)):
                if level not in shapes:
                    raise ValueError(
                        f"[{self.owner}] level '{level}' not in the {role}'s backbone outputs; "
                        f"available: {', '.join(shapes)}"
                    )
            if s_shapes[level].stride != t_shapes[level].stride:
                raise ValueError(
                    f"[{self.owner}] level '{level}' cannot be paired: student stride "
                    f"{s_shapes[level].stride} != teacher stride {t_shapes[level].stride}"
                )
        self.levels = list(levels)
        self.channels = {k: (s_shapes[k].channels, t_shapes[k].channels) for k in levels}
        if self.adapt:
            self.adapters = nn.ModuleDict(
                {k: conv_adapter(cs, ct) for k, (cs, ct) in self.channels.items()}
            )
        self.build()

    def build(self) -> None:
        """Create per-level modules once ``self.levels`` and ``self.channels`` are known."""

    def loss_keys(self) -> Optional[List[str]]:
        """``loss_<name>_<level>`` for every level, the keys of the feature-level terms (None
        for a subclass without a ``name``, or that returns other keys and says so here)."""
        if self.name is None:
            return None
        return [f"loss_{self.name}_{level}" for level in self.levels]

    def level_pairs(self, ctx: KDContext) -> Iterator[Tuple[str, Tensor, Tensor]]:
        """Yield (level, student map (N, C_s, H, W), teacher map (N, C_t, H, W)).

        Raises:
            ValueError: naming the level when the two maps differ in batch or spatial size.
        """
        s_feats, t_feats = ctx.student_features, ctx.teacher_features()
        for level in self.levels:
            fs, ft = s_feats[level], t_feats[level]
            if fs.shape[0] != ft.shape[0] or fs.shape[-2:] != ft.shape[-2:]:
                raise ValueError(
                    f"[{self.owner}] level '{level}': student map {tuple(fs.shape)} and teacher "
                    f"map {tuple(ft.shape)} differ in batch or spatial size: the student's batch "
                    f"is padded to {tuple(ctx.padded_hw)} (size_divisibility "
                    f"{ctx.student.backbone.size_divisibility}), the teacher's to "
                    f"{tuple(ctx.teacher_images().tensor.shape[-2:])} (size_divisibility "
                    f"{ctx.teacher.backbone.size_divisibility}); the teacher's padding is "
                    "extended to the student's, never cropped, so give the student the larger "
                    "size_divisibility"
                )
            yield level, fs, ft

    def adapted_pairs(self, ctx: KDContext) -> Iterator[Tuple[str, Tensor, Tensor]]:
        """:meth:`level_pairs` with the student's map through its adapter: (N, C_t, H, W)."""
        for level, fs, ft in self.level_pairs(ctx):
            yield level, self.adapters[level](fs), ft
