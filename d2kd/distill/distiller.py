"""The Distiller: a stock Detectron2 student, a frozen teacher, and named KD terms."""

import inspect
from typing import Any, Dict, List, Mapping, Optional, Union

from detectron2.config import instantiate
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from .guard import check_finite
from .schedule import Schedule, as_schedule
from .taps import Taps, check_tap_paths
from .teacher import Teacher
from .term import KDContext, KDTerm

__all__ = ["Distiller", "current_iteration"]


def current_iteration() -> int:
    """The trainer's iteration from Detectron2's event storage (0 outside a training loop)."""
    try:
        return get_event_storage().iter
    except (AssertionError, AttributeError):
        return 0


@META_ARCH_REGISTRY.register()
class Distiller(nn.Module):
    """Train a student under a frozen teacher; evaluate and export the student alone.

    In eval mode ``forward`` is exactly ``student(batched_inputs)``. In training it returns the
    student's own losses (keys unprefixed) plus every term's losses times the term's weight at
    this iteration, one flat dict so :class:`EventStorage` logs each term and level.

    Checkpoints keep the student as the model and the terms under "distill" (see
    ``d2kd.engine.checkpoint``); the teacher is never saved, synced or optimised.

    Args:
        student: a Detectron2 detector (e.g. RetinaNet, GeneralizedRCNN).
        teacher: a :class:`Teacher` wrapping the teacher detector, or None for teacher-free
            terms (e.g. TF-HEAD); ``ctx.teacher`` is then None.
        terms: KD terms by name; each is set up against the built student and teacher here.
        weights: number or schedule (a function of the iteration) per term name (every loss of
            that term) or per loss key (``"loss_akd"`` weights ``loss_akd`` and every key that
            starts with ``loss_akd_``; the longest match wins over the term's weight); default
            1.0. A term whose own weight is 0 at an iteration is not run; a loss whose weight is
            0 is left out of the step.
        check_finite: stop with a message naming the loss when any loss is NaN/Inf.
        init_student_from_teacher: once the teacher is loaded, copy its weights into the student
            wherever names and shapes match outside the bottom-up backbone (FGD's "inheriting"
            initialisation); the trainer does it and logs what was copied.
        student_losses: run the student's own forward (its detection losses, and the taps) in
            training. False for data-free training (DFAD), where inputs carry no annotations
            and the terms run whatever student parts they need themselves (``ctx.student``).
    """

    def __init__(
        self,
        *,
        student: nn.Module,
        teacher: Optional[Teacher],
        terms: Mapping[str, KDTerm],
        weights: Optional[Mapping[str, Union[float, Schedule]]] = None,
        check_finite: bool = True,
        init_student_from_teacher: bool = False,
        student_losses: bool = True,
    ):
        super().__init__()
        if teacher is not None and not isinstance(teacher, Teacher):
            raise TypeError(
                "[Distiller] teacher must be a d2kd.distill.Teacher or None, got "
                f"{type(teacher).__name__}"
            )
        if teacher is None and init_student_from_teacher:
            raise ValueError("[Distiller] init_student_from_teacher needs a teacher")
        self.student = student
        self.teacher = teacher
        # LazyConfig's instantiate does not descend into plain dicts: build their nodes here.
        self.terms = nn.ModuleDict({k: instantiate(v) for k, v in dict(terms).items()})
        weights = {k: instantiate(v) for k, v in dict(weights or {}).items()}
        unknown = sorted(k for k in weights if k not in self.terms and not k.startswith("loss_"))
        if unknown:
            raise ValueError(
                f"[Distiller] weights given for unknown terms {unknown}; terms: "
                f"{list(self.terms)} (weights of single losses are keyed 'loss_...')"
            )
        self.weights: Dict[str, Schedule] = {
            name: as_schedule(weights.get(name, 1.0), name) for name in self.terms
        }
        # Longest prefix first, so "loss_akd_fc6" wins over "loss_akd".
        self.loss_weights: Dict[str, Schedule] = {
            k: as_schedule(weights[k], k)
            for k in sorted((k for k in weights if k.startswith("loss_")), key=len, reverse=True)
        }
        self._loss_weights_checked = not self.loss_weights
        self.check_finite = check_finite
        self.init_student_from_teacher = init_student_from_teacher
        self.student_losses = student_losses
        for name, term in self.terms.items():
            if not isinstance(term, KDTerm):
                raise TypeError(
                    f"[Distiller] term '{name}' is a {type(term).__name__}, not a KDTerm"
                )
            if len(inspect.signature(term.forward).parameters) != 1:
                raise TypeError(f"[Distiller] term '{name}'.forward must take one KDContext")
            term.setup(student, self.teacher_model)
            check_tap_paths(student, term.student_taps, owner=f"Distiller: term '{name}'")
        self._tap_paths: List[str] = list(
            dict.fromkeys(p for t in self.terms.values() for p in t.student_taps)
        )
        # DDP must neither sync nor broadcast anything of the frozen teacher.
        frozen = teacher if teacher is not None else nn.Module()
        self._ddp_params_and_buffers_to_ignore = [
            f"teacher.{n}" for n, _ in frozen.named_parameters()
        ] + [f"teacher.{n}" for n, _ in frozen.named_buffers()]

    @property
    def teacher_model(self) -> Optional[nn.Module]:
        """The teacher detector itself (None for a teacher-free Distiller)."""
        return self.teacher.model if self.teacher is not None else None

    def on_teacher_loaded(self) -> None:
        """Tell every term the teacher's weights are in place (after :meth:`Teacher.load`)."""
        for term in self.terms.values():
            term.on_teacher_loaded(self.teacher_model)

    @property
    def device(self):
        return self.student.device

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.train(False)
        return self

    def _loss_weight(self, key: str, iteration: int, term_weight: float) -> float:
        for prefix, schedule in self.loss_weights.items():
            if key == prefix or key.startswith(prefix + "_"):
                return schedule(iteration)
        return term_weight

    def _check_loss_weights(self, losses: List[str]) -> None:
        """Refuse, once every term has run, loss-key weights that match no loss (typos)."""
        unmatched = [
            p for p in self.loss_weights if not any(k == p or k.startswith(p + "_") for k in losses)
        ]
        if unmatched:
            raise ValueError(
                f"[Distiller] weights {unmatched} match no loss of this step; losses: "
                f"{sorted(losses)}"
            )
        self._loss_weights_checked = True

    def forward(self, batched_inputs: List[Dict[str, Any]]):
        if not self.training:
            return self.student(batched_inputs)
        losses: Dict[str, Tensor] = {}
        with Taps(self.student, self._tap_paths if self.student_losses else ()) as taps:
            if self.student_losses:
                losses.update(self.student(batched_inputs))
        iteration = current_iteration()
        ctx = KDContext(
            batched_inputs,
            self.student,
            self.teacher_model,
            taps.outputs,
            taps.inputs,
            iteration,
            student_all_outputs=taps.all_outputs,
        )
        all_ran, produced = True, []
        for name, term in self.terms.items():
            weight = self.weights[name](iteration)
            if weight == 0:
                all_ran = False
                continue
            for key, value in term(ctx).items():
                if key in produced:
                    raise KeyError(f"[Distiller] term '{name}' returned '{key}', already a loss")
                produced.append(key)
                w = self._loss_weight(key, iteration, weight)
                if w != 0:
                    losses[key] = value * w
        if all_ran and not self._loss_weights_checked:
            self._check_loss_weights(produced)
        if self.check_finite:
            check_finite(losses, iteration)
        return losses
