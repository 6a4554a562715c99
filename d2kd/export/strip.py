"""Strip a d2kd checkpoint down to the student and load it into a stock Detectron2 model.

A d2kd training checkpoint holds ``{"model": student state dict, "distill": KD parts, "trainer":
..., "rng": ..., "iteration": int, "d2kd": {"format", "distiller", "student"}}``. Export keeps
only ``"model"`` and checks that it loads into ``instantiate(student_node(cfg))`` with zero
missing, unexpected or mis-shaped keys, so no teacher, adapter or optimizer state can reach the
exported graph. Files are read by d2kd's one checkpoint reader
(:func:`d2kd.utils.checkpoint_io.read_checkpoint`: safe unless ``unsafe_load``).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch
from torch import nn

from ..utils.checkpoint_io import CheckpointError, read_checkpoint
from ..utils.files import atomic_write
from .errors import ExportError

__all__ = [
    "ExportError",
    "student_node",
    "load_checkpoint",
    "recorded_student",
    "strip_checkpoint",
    "check_state_dict",
    "build_student",
    "save_student_checkpoint",
]

logger = logging.getLogger(__name__)

#: Top-level key that marks a checkpoint written by d2kd's trainer.
D2KD_KEY = "d2kd"


def student_node(cfg: Any) -> Any:
    """The config node of the model to export: ``cfg.model.student`` for a distillation recipe.

    Args:
        cfg: a LazyConfig (``cfg.model`` is a Distiller node or a plain Detectron2 model node).

    Returns:
        ``cfg.model.student`` if the model node has a ``student`` key, else ``cfg.model``.
    """
    model = cfg.model
    return model.student if "student" in model else model


def load_checkpoint(
    path: str, allow_foreign: bool = False, unsafe_load: bool = False
) -> Dict[str, Any]:
    """Read a checkpoint with d2kd's checkpoint reader and check that it is a d2kd run.

    Args:
        path: a ``.pth`` written by d2kd's trainer (or, with ``allow_foreign``, any file the
            reader accepts whose ``"model"`` is a state dict: a stock Detectron2 ``.pth``/``.pkl``).
        allow_foreign: accept files without the ``"d2kd"`` key.
        unsafe_load: the reader's named opt-out for trusted files holding other objects (a full
            unpickle, which can run code).

    Returns:
        The whole checkpoint dict.

    Raises:
        ExportError: missing, unreadable or refused file (the reader's reason, e.g. which global
            it refused), a file that is not a d2kd run, no ``"model"`` state dict.
    """
    try:
        data = read_checkpoint(path, unsafe_load=unsafe_load)
    except CheckpointError as e:  # UnsafeCheckpointError included: its message says why
        raise ExportError(f"[export] could not load the checkpoint: {e}") from e
    model = data["model"]
    if set(data) == {"model"} and isinstance(model, Mapping) and not _is_state_dict(model):
        # the reader wraps a file without a "model" key as {"model": <the file>}
        raise ExportError(
            f"[export] checkpoint {path} has no 'model' key (top-level keys: {sorted(model)[:8]})"
        )
    if D2KD_KEY not in data and not allow_foreign:
        raise ExportError(
            f"[export] {path} is not a d2kd run (no '{D2KD_KEY}' key; top-level keys: "
            f"{sorted(data)[:8]}). Pass --allow-foreign to export its 'model' state dict anyway."
        )
    return dict(data)


def _is_state_dict(sd: Mapping[str, Any]) -> bool:
    return all(isinstance(v, (torch.Tensor, np.ndarray)) for v in sd.values())


def recorded_student(ckpt: Mapping[str, Any]) -> Optional[str]:
    """The student class a d2kd checkpoint says it holds (``ckpt["d2kd"]["student"]``), if any."""
    meta = ckpt.get(D2KD_KEY)
    return meta.get("student") if isinstance(meta, Mapping) else None


def strip_checkpoint(
    ckpt: Mapping[str, Any], path: str = "<checkpoint>"
) -> Dict[str, torch.Tensor]:
    """Keep only the student's state dict; drop ``distill``, ``trainer``, ``rng``, ... .

    Args:
        ckpt: a checkpoint dict from :func:`load_checkpoint`.
        path: its file name, for messages.

    Returns:
        The ``"model"`` state dict (a new dict; tensors are shared).
    """
    sd = ckpt["model"]
    if not isinstance(sd, Mapping):
        raise ExportError(f"[export] {path}['model'] is a {type(sd).__name__}, not a state dict")
    bad = [k for k, v in sd.items() if not isinstance(v, (torch.Tensor, np.ndarray))]
    if bad:
        raise ExportError(f"[export] {path}['model'] has non-tensor entries: {bad[:5]}")
    dropped = sorted(str(k) for k in ckpt if k != "model")
    if dropped:
        logger.info("[export] dropped checkpoint keys %s from %s", dropped, path)
    # Detectron2 model-zoo .pkl files hold numpy arrays
    return {k: torch.as_tensor(v) for k, v in sd.items()}


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, show: int = 5
) -> None:
    """Require ``state_dict`` to match ``model.state_dict()`` key for key and shape for shape.

    Args:
        model: the freshly built student.
        state_dict: the stripped checkpoint.
        source: file name (or description) for the message.
        show: how many keys of each kind to list in the error.

    Raises:
        ExportError: naming the first ``show`` missing, unexpected and mis-shaped keys.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return
    lines = [f"[export] checkpoint {source} does not match {type(model).__name__} of the config:"]
    for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            more = f" (+{len(items) - show} more)" if len(items) > show else ""
            lines.append(f"  {len(items)} {name} keys: {items[:show]}{more}")
    raise ExportError("\n".join(lines))


def build_student(
    cfg: Any, state_dict: Optional[Mapping[str, torch.Tensor]], source: str = "<checkpoint>"
) -> nn.Module:
    """Instantiate the student on the CPU, load the stripped weights strictly, switch to eval.

    Args:
        cfg: the recipe.
        state_dict: stripped weights, or None to keep the random initialisation.
        source: checkpoint name for messages.

    Returns:
        The stock Detectron2 model in eval mode, with no forward hooks.
    """
    from detectron2.config import instantiate

    node = student_node(cfg)
    if "device" in node:
        node.device = "cpu"
    model = instantiate(node)
    if not isinstance(model, nn.Module):
        raise ExportError(f"[export] the student node built a {type(model).__name__}, not a model")
    model.to("cpu")
    if state_dict is not None:
        check_state_dict(model, state_dict, source)
        model.load_state_dict(state_dict, strict=True)
    hooked = [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    if hooked:
        raise ExportError(f"[export] forward hooks remain on student modules {hooked[:5]}")
    return model.eval()


def save_student_checkpoint(state_dict: Mapping[str, torch.Tensor], path: str) -> None:
    """Write ``{"model": state_dict}`` (stock Detectron2 layout) atomically to ``path``."""
    atomic_write(path, lambda f: torch.save({"model": dict(state_dict)}, f))
