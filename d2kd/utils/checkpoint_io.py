"""The one checkpoint reader: safe by default, whatever the file's format or where it lies.

Every entry point of d2kd (training init and resume, ``--eval-only``, teachers, export) reads
checkpoints through :func:`read_checkpoint`:

* ``.pth`` / ``.pt`` and anything else torch saved: ``torch.load(weights_only=True)``, which
  rebuilds tensors and plain containers and refuses every other class, so a crafted pickle
  cannot run code on load. d2kd saves only what this loader accepts (its own checkpoints
  included).
* Detectron2 / Caffe2 model-zoo ``.pkl`` files: unpickled by :class:`NumpyOnlyUnpickler`, which
  allows numpy arrays, numpy scalars and plain containers and nothing else.
* ``unsafe_load=True`` is the single, named opt-out for trusted legacy files (command-line
  ``--unsafe-load``, config key ``train.unsafe_load``): a full unpickle, which can run code.
"""

import io
import logging
import os
import pickle
import zipfile
from typing import Any, Dict

import torch

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "NumpyOnlyUnpickler",
    "read_checkpoint",
    "read_state_dict",
]

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or holds something the reader refuses."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds objects whose unpickling could run code; it was not loaded."""


# Globals a Detectron2/Caffe2 .pkl needs: numpy's array and scalar reconstruction, dtypes, and
# ordered dicts. Nothing here executes user code on load.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler for model-zoo ``.pkl`` files that refuses every class but numpy's arrays.

    Raises:
        UnsafeCheckpointError: naming the refused global.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS or (
            module in ("numpy", "numpy.dtypes") and name.endswith("DType")
        ):
            return super().find_class(module, name)
        raise UnsafeCheckpointError(f"refused global {module}.{name}")


def _refusal(path: str, detail: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"[checkpoint] refused {path}: it holds objects other than tensors, arrays and plain "
        f"containers ({detail}), and unpickling them could run code. If you trust the file, "
        "load it with --unsafe-load (train.unsafe_load=True in a recipe)."
    )


def _read_pkl(path: str, unsafe_load: bool) -> Dict[str, Any]:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        if unsafe_load:
            data = pickle.loads(raw, encoding="latin1")
        else:
            data = NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except UnsafeCheckpointError as e:
        raise _refusal(path, str(e)) from e
    except Exception as e:
        raise CheckpointError(f"[checkpoint] could not read {path}: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"[checkpoint] {path} holds a {type(data).__name__}, not a dict")
    if "model" in data and "__author__" in data:  # Detectron2 model-zoo layout
        return data
    # Caffe2 / Detectron1 layout, as Detectron2's DetectionCheckpointer reads it.
    blobs = data.get("blobs", data)
    blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
    return {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}


# How torch's weights-only unpickler names what it refused (not a damaged file): a global off
# its allowlist or from a blocked module (os, posix, sys), a call, construction or build of
# something it does not know, an opcode of pickle protocol > 2. Garbage bytes reach the same
# unpickler, so the non-global refusals count only inside a torch zip archive.
_GLOBAL_REFUSALS = ("Unsupported global", "unsupported GLOBAL")
_OTHER_REFUSALS = ("Trying to call reduce", "Can only", "persistent", "Unsupported operand")


def _refusal_detail(path: str, error: Exception) -> str:
    """What the safe unpickler refused, or "" when the bytes are not a checkpoint at all."""
    archive = None
    for line in str(error).splitlines():
        line = line.split("WeightsUnpickler error:")[-1].strip()
        if any(mark in line for mark in _GLOBAL_REFUSALS):
            return line.split("Unsupported global:")[-1].strip()
        if any(mark in line for mark in _OTHER_REFUSALS):
            archive = zipfile.is_zipfile(path) if archive is None else archive
            if archive:
                return line
    return ""


def _read_torch(path: str, unsafe_load: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _refusal_detail(path, e)
        if not detail:  # garbage bytes fail in the unpickler too
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            raise CheckpointError(
                f"[checkpoint] could not read {path}: not a torch checkpoint or truncated "
                f"({lines[0] if lines else e})"
            ) from e
        if not unsafe_load:
            raise _refusal(path, detail) from e
        logger.warning("[checkpoint] loading %s with weights_only=False (--unsafe-load)", path)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:
            raise CheckpointError(f"[checkpoint] could not read {path}: {e2}") from e2
    except Exception as e:
        raise CheckpointError(
            f"[checkpoint] could not read {path}: not a torch checkpoint or truncated ({e})"
        ) from e


def read_checkpoint(path: str, *, unsafe_load: bool = False) -> Dict[str, Any]:
    """Read a checkpoint as a dict with a ``"model"`` state dict (Detectron2's layout).

    Args:
        path: a local file or a URL Detectron2's PathManager can fetch (``detectron2://...``).
        unsafe_load: the opt-out for trusted legacy files (a full unpickle, which can run code).

    Returns:
        the file's dict; a bare state dict is wrapped as ``{"model": state}``.

    Raises:
        CheckpointError: missing or unreadable file (the message names it).
        UnsafeCheckpointError: the file holds objects only a full unpickle would build.
    """
    if not path:
        raise CheckpointError("[checkpoint] no checkpoint path given")
    if "://" in path:
        from detectron2.utils.file_io import PathManager

        try:
            path = PathManager.get_local_path(path)
        except Exception as e:
            raise CheckpointError(f"[checkpoint] could not fetch {path}: {e}") from e
    if not os.path.isfile(path):
        raise CheckpointError(f"[checkpoint] file not found: {path}")
    if path.endswith(".pkl"):
        data = _read_pkl(path, unsafe_load)
    else:
        data = _read_torch(path, unsafe_load)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"[checkpoint] {path} holds a {type(data).__name__}, expected a dict of tensors"
        )
    if "model" not in data:
        data = {"model": data}
    return data


def read_state_dict(path: str, *, unsafe_load: bool = False) -> Dict[str, torch.Tensor]:
    """The ``"model"`` state dict of a checkpoint, arrays converted to tensors.

    Raises:
        CheckpointError: as :func:`read_checkpoint`, or when there is no non-empty state dict.
    """
    data = read_checkpoint(path, unsafe_load=unsafe_load)
    state = data["model"]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"[checkpoint] {path} holds no state dict under 'model'")
    return {k: torch.as_tensor(v) for k, v in state.items()}
