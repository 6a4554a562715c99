"""The frozen teacher: built from its own config node, loaded with a key report, never trained.

Silent teacher-loading failures (wrong keys, a random teacher) are the commonest way KD gains
vanish, so loading is strict by default and the report is logged.
"""

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import torch
from fvcore.common.checkpoint import (
    get_missing_parameters_message,
    get_unexpected_parameters_message,
)
from torch import nn

from ..utils.checkpoint_io import CheckpointError, read_checkpoint

__all__ = ["Teacher", "KeyReport", "TeacherLoadError", "inherit_from_teacher"]

logger = logging.getLogger(__name__)


class TeacherLoadError(RuntimeError):
    """The teacher's weights are missing, unreadable, or do not match its model."""


@dataclass
class KeyReport:
    """What loading the teacher's weights matched and what it did not."""

    path: str
    loaded: int = 0
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"[Teacher] {self.path}: {self.loaded} tensors loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.mismatched)} with another shape"
        )


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(key == p or (p.endswith("*") and key.startswith(p[:-1])) for p in patterns)


def read_weights_file(path: str, unsafe_load: bool = False) -> Dict[str, Any]:
    """Read a teacher checkpoint's state dict through d2kd's one safe reader.

    ``.pth`` files are read with ``torch.load(weights_only=True)``, Detectron2 model-zoo ``.pkl``
    files with an unpickler that builds numpy arrays and nothing else
    (:func:`d2kd.utils.checkpoint_io.read_checkpoint`); a dict with a "model" key is unwrapped.

    Raises:
        TeacherLoadError: naming the file when it is missing, unreadable or refused as unsafe.
    """
    if not path:
        raise TeacherLoadError(
            "[Teacher] no teacher weights given: set model.teacher.weights=<checkpoint>"
        )
    try:
        data = read_checkpoint(path, unsafe_load=unsafe_load)
    except CheckpointError as e:
        raise TeacherLoadError(str(e).replace("[checkpoint]", "[Teacher] teacher weights:")) from e
    state = data["model"]
    if not isinstance(state, dict) or not state:
        raise TeacherLoadError(f"[Teacher] {path} holds no state dict (expected a 'model' key)")
    state = {k: torch.as_tensor(v) for k, v in state.items()}
    if data.get("matching_heuristics"):
        state[_HEURISTICS] = torch.ones(())  # Caffe2-style names: rename by matching (see load)
    return state


_HEURISTICS = "__d2kd_matching_heuristics__"


class Teacher(nn.Module):
    """A frozen Detectron2 detector used only to produce distillation targets.

    Its parameters never require grad, it stays in eval mode whatever ``train()`` is called with,
    and it is loaded by :meth:`load` (called by the trainer, never by the constructor), so an
    eval-only run needs no teacher file.

    Args:
        model: the teacher detector (e.g. ``instantiate`` of a RetinaNet node).
        weights: path of its checkpoint (``.pth`` with a "model" key, or a model-zoo ``.pkl``).
        allow_missing: keys (``prefix*`` patterns allowed) that may be absent from the file.
        allow_unexpected: keys that may be in the file but not in the model.
    """

    def __init__(
        self,
        model: nn.Module,
        weights: str = "",
        allow_missing: Sequence[str] = (),
        allow_unexpected: Sequence[str] = (),
    ):
        super().__init__()
        self.model = model
        self.weights = weights
        self.allow_missing = list(allow_missing)
        self.allow_unexpected = list(allow_unexpected)
        self.loaded_from = ""
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> "Teacher":
        """Keep the teacher in eval mode (BN statistics frozen) whatever the caller asks."""
        return super().train(False)

    def load(self, path: str = "", unsafe_load: bool = False) -> KeyReport:
        """Load weights strictly and return the key report.

        Raises:
            TeacherLoadError: naming the file and the first offending keys when the file is
                missing or corrupt, or when keys are missing, unexpected or mis-shaped beyond what
                ``allow_missing`` / ``allow_unexpected`` permit.
        """
        path = path or self.weights
        state = read_weights_file(path, unsafe_load=unsafe_load)
        own = self.model.state_dict()
        if state.pop(_HEURISTICS, None) is not None:
            from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts

            state = align_and_update_state_dicts(own, state, c2_conversion=True)
        report = KeyReport(path=path)
        to_load = {}
        for k, v in state.items():
            if k not in own:
                report.unexpected.append(k)
            elif tuple(own[k].shape) != tuple(v.shape):
                report.mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
            else:
                to_load[k] = v
        report.missing = [k for k in own if k not in state]
        report.loaded = len(to_load)
        bad_missing = [k for k in report.missing if not _matches(k, self.allow_missing)]
        bad_unexpected = [k for k in report.unexpected if not _matches(k, self.allow_unexpected)]
        if bad_missing or bad_unexpected or report.mismatched:
            # fvcore's report groups keys by module ("backbone.res2.{0,1}.conv1.weight").
            lines = [report.summary().replace("[Teacher]", "[Teacher] cannot load")]
            if bad_missing:
                lines.append(get_missing_parameters_message(bad_missing))
            if bad_unexpected:
                lines.append(get_unexpected_parameters_message(bad_unexpected))
            for k, got, want in report.mismatched[:8]:
                lines.append(f"  shape of '{k}': file {got}, model {want}")
            lines.append(
                "  (is model.teacher the config that produced these weights? allow keys with "
                "model.teacher.allow_missing / allow_unexpected)"
            )
            raise TeacherLoadError("\n".join(lines))
        self.model.load_state_dict(to_load, strict=False)
        self.loaded_from = path
        logger.info(report.summary())
        if report.missing:
            logger.info(get_missing_parameters_message(report.missing))
        if report.unexpected:
            logger.info(get_unexpected_parameters_message(report.unexpected))
        return report

    def forward(self, *args, **kwargs):
        """Run the teacher detector as is (eval mode); KD terms usually call its parts instead."""
        return self.model(*args, **kwargs)


def inherit_from_teacher(
    student: nn.Module,
    teacher: nn.Module,
    exclude: Sequence[str] = ("backbone.bottom_up.",),
) -> Tuple[List[str], List[str]]:
    """Copy the teacher's weights into the student wherever names and shapes agree.

    FGD's "inheriting strategy": the student starts from the teacher's neck and heads (every key
    outside the backbone's bottom-up network, which differs between R18 and R50). In Detectron2
    ``backbone.*`` also holds the FPN, hence the default exclusion of ``backbone.bottom_up.``.

    Args:
        student: the student detector (modified in place).
        teacher: the loaded teacher detector.
        exclude: key prefixes never copied.

    Returns:
        (copied keys, skipped keys with a reason) so the caller can report both.
    """
    t_state = teacher.state_dict()
    s_state = student.state_dict()
    copied, skipped = [], []
    for key, value in s_state.items():
        if any(key.startswith(p) for p in exclude):
            continue
        if key not in t_state:
            skipped.append(f"{key} (not in teacher)")
        elif t_state[key].shape != value.shape:
            skipped.append(
                f"{key} (teacher {tuple(t_state[key].shape)}, student {tuple(value.shape)})"
            )
        else:
            copied.append(key)
    student.load_state_dict({k: t_state[k] for k in copied}, strict=False)
    logger.info(
        f"[Teacher] inherited {len(copied)} tensors into the student, skipped {len(skipped)}"
        + (f": {skipped[:5]}" if skipped else "")
    )
    return copied, skipped
