"""Checkpoints whose "model" is the student alone, written atomically.

Layout of every file written here::

    {"model": student state dict (stock Detectron2 keys),
     "distill": state dict of the KD terms (adapters, context blocks, ...), Distiller runs only,
     "trainer": {"iteration", "optimizer", "hooks"}, "rng": {...}, "loss_normalizers": {...},
     "iteration": int,
     "d2kd": {"format": 1, "distiller": bool, "student": class name}}

so ``model_final.pth["model"]`` loads into ``instantiate(cfg.model.student)`` with no key surgery,
while ``--resume`` restores everything else.
"""

import os
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qs

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..distill.distiller import Distiller
from ..utils.checkpoint_io import read_checkpoint
from ..utils.files import atomic_write, atomic_write_text

__all__ = ["DistillCheckpointer", "split_student", "unwrap_ddp", "CHECKPOINT_FORMAT", "RNGState"]

CHECKPOINT_FORMAT = 1


def unwrap_ddp(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def split_student(model: nn.Module) -> Tuple[nn.Module, Optional[nn.Module]]:
    """(student, KD parts or None) of a model, unwrapping DDP."""
    model = unwrap_ddp(model)
    if isinstance(model, Distiller):
        return model.student, model.terms
    return model, None


class RNGState:
    """Checkpointable torch RNG state, so stochastic model parts (e.g. RoI sampling) resume exactly.

    Host-side augmentation randomness needs none: the resumable loader seeds it per sample.
    """

    def state_dict(self) -> Dict[str, Any]:
        return {"torch": torch.get_rng_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if "torch" in state:
            torch.set_rng_state(state["torch"])


class LossNormalizerState:
    """Checkpointable running loss normalisers of dense detectors.

    Detectron2's RetinaNet divides its losses by an exponential moving average of the number of
    foreground anchors kept in a plain attribute (``loss_normalizer``), which its state dict does
    not hold; without this a resumed run would restart the average at its initial value and
    drift from an uninterrupted one.
    """

    def __init__(self, model: nn.Module):
        self.model = model

    def state_dict(self) -> Dict[str, float]:
        return {
            name: float(m.loss_normalizer)
            for name, m in self.model.named_modules()
            if isinstance(getattr(m, "loss_normalizer", None), (int, float))
        }

    def load_state_dict(self, state: Dict[str, float]) -> None:
        modules = dict(self.model.named_modules())
        for name, value in state.items():
            if name in modules:
                modules[name].loss_normalizer = value


class DistillCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer for plain models and Distillers alike.

    For a Distiller the checkpointed model is the student and the KD terms are the "distill"
    checkpointable. Saving never leaves a truncated file behind: a killed process leaves either
    the previous checkpoint or the new one, and ``last_checkpoint`` names a complete file; a full
    disk stops the run with :class:`d2kd.utils.files.DiskFullError` naming the intact file.
    Loading goes through :func:`d2kd.utils.checkpoint_io.read_checkpoint` whatever the file's
    location (init, resume, eval-only): only tensors, arrays and plain containers are unpickled.

    Args:
        model: a Detectron2 model, a Distiller, or either wrapped in DDP.
        save_dir: output folder.
        unsafe_load: the named opt-out for trusted legacy files (``train.unsafe_load``).
        checkpointables: further objects with ``state_dict``/``load_state_dict`` (trainer, ...).
    """

    def __init__(
        self, model: nn.Module, save_dir: str = "", unsafe_load: bool = False, **checkpointables: Any
    ):
        student, kd_parts = split_student(model)
        if kd_parts is not None:
            checkpointables.setdefault("distill", kd_parts)
        checkpointables.setdefault("rng", RNGState())
        checkpointables.setdefault("loss_normalizers", LossNormalizerState(student))
        self.is_distiller = kd_parts is not None
        self.unsafe_load = unsafe_load
        super().__init__(student, save_dir, **checkpointables)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        data["d2kd"] = {
            "format": CHECKPOINT_FORMAT,
            "distiller": self.is_distiller,
            "student": type(self.model).__name__,
        }
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        data = read_checkpoint(filename, unsafe_load=self.unsafe_load)
        url = self._parsed_url_during_load
        if url is not None and parse_qs(url.query).get("matching_heuristics") == ["True"]:
            data["matching_heuristics"] = True
        return data
