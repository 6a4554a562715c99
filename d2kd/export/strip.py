"""Strip a d2kd checkpoint down to the student and load it into a stock Detectron2 model.

A d2kd training checkpoint holds ``{"model": student state dict, "distill": KD parts, "trainer":
..., "rng": ..., "iteration": int, "d2kd": {"format", "distiller", "student"}}``. Export keeps
only ``"model"`` and checks that it loads into ``instantiate(student_node(cfg))`` with zero
missing, unexpected or mis-shaped keys, so no teacher, adapter or optimizer state can reach the
exported graph.

Also here: :class:`ExportError` (every user-facing export failure) and the staging helpers that
make an export directory appear all at once or not at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import tempfile
from typing import Any, Dict, Iterable, List, Mapping, Optional

import torch
from torch import nn

__all__ = [
    "ExportError",
    "student_node",
    "load_checkpoint",
    "strip_checkpoint",
    "check_state_dict",
    "build_student",
    "save_student_checkpoint",
    "file_sha256",
    "StagingDir",
]

logger = logging.getLogger(__name__)

#: Top-level key that marks a checkpoint written by d2kd's trainer.
D2KD_KEY = "d2kd"


class ExportError(RuntimeError):
    """A user-facing export failure; the message starts with ``[export]`` and names the culprit."""


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
    """Read a checkpoint file with ``torch.load(weights_only=True)`` and check its layout.

    Args:
        path: a ``.pth`` written by d2kd's trainer (or, with ``allow_foreign``, any file whose top
            level is a dict with a ``"model"`` state dict).
        allow_foreign: accept files without the ``"d2kd"`` key.
        unsafe_load: if safe unpickling refuses the file (e.g. hook state of arbitrary classes),
            retry with ``weights_only=False``. Only for files you trust: it can run code.

    Returns:
        The whole checkpoint dict.

    Raises:
        ExportError: missing or unreadable file, a file that is not a d2kd run, no ``"model"`` key.
    """
    if not os.path.isfile(path):
        raise ExportError(f"[export] checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = [ln.strip() for ln in str(e).splitlines() if "WeightsUnpickler" in ln]
        detail = detail[0] if detail else str(e).splitlines()[0]
        if "Unsupported global" not in detail:  # garbage bytes also fail in the unpickler
            raise ExportError(
                f"[export] could not read checkpoint {path} (corrupt?): {detail}"
            ) from e
        if not unsafe_load:
            raise ExportError(
                f"[export] torch.load(weights_only=True) refused {path}: {detail}\n"
                "  The file holds objects other than tensors and plain containers. If you trust "
                "it, pass --unsafe-load to read it with weights_only=False."
            ) from e
        logger.warning("[export] weights_only=True refused %s; loading it unsafely as asked", path)
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:
            raise ExportError(f"[export] could not read checkpoint {path}: {e2}") from e2
    except Exception as e:
        raise ExportError(f"[export] could not read checkpoint {path} (corrupt?): {e}") from e
    if not isinstance(data, Mapping):
        raise ExportError(
            f"[export] checkpoint {path} holds a {type(data).__name__}, expected a dict with a "
            "'model' key"
        )
    if D2KD_KEY not in data and not allow_foreign:
        raise ExportError(
            f"[export] {path} is not a d2kd run (no '{D2KD_KEY}' key; top-level keys: "
            f"{sorted(data)[:8]}). Pass --allow-foreign to export its 'model' state dict anyway."
        )
    if "model" not in data:
        raise ExportError(
            f"[export] checkpoint {path} has no 'model' key (top-level keys: {sorted(data)[:8]})"
        )
    return dict(data)


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
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ExportError(f"[export] {path}['model'] has non-tensor entries: {bad[:5]}")
    dropped = sorted(k for k in ckpt if k != "model")
    if dropped:
        logger.info("[export] dropped checkpoint keys %s from %s", dropped, path)
    return dict(sd)


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


def _publishable(path: str) -> None:
    """Give a ``mkstemp`` file (mode 0600) the permissions of a normally created file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def save_student_checkpoint(state_dict: Mapping[str, torch.Tensor], path: str) -> None:
    """Write ``{"model": state_dict}`` (stock Detectron2 layout) atomically to ``path``."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"model": dict(state_dict)}, f)
            f.flush()
            os.fsync(f.fileno())
        _publishable(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def file_sha256(path: str) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class StagingDir:
    """Build an export in a hidden folder inside ``final_dir``; publish it only when it is good.

    * Everything is written under ``final_dir/.export-tmp-XXXX/``.
    * :meth:`publish` moves the artifacts into ``final_dir`` one ``os.replace`` each, and the
      report last, after removing any previous report first: a ``report.json`` names only files
      of its own run, and files without a report are not a finished export.
    * :meth:`discard` (any failure) deletes the staging folder, removes previous artifacts with
      the names this run would have written (so no stale ``*.onnx`` can pass for this run's
      result) and leaves at most a ``report.failed.json``.
    """

    REPORT = "report.json"
    FAILED_REPORT = "report.failed.json"

    def __init__(self, final_dir: str) -> None:
        self.final_dir = os.path.abspath(final_dir)
        os.makedirs(self.final_dir, exist_ok=True)
        self.path = tempfile.mkdtemp(prefix=".export-tmp-", dir=self.final_dir)

    def file(self, name: str) -> str:
        """Path of ``name`` inside the staging folder."""
        return os.path.join(self.path, name)

    def publish(self, names: Iterable[str]) -> List[str]:
        """Move ``names`` (report last) into the final folder; return their final paths."""
        names = list(names)
        for stale in (self.REPORT, self.FAILED_REPORT):
            if os.path.exists(os.path.join(self.final_dir, stale)):
                os.unlink(os.path.join(self.final_dir, stale))
        ordered = [n for n in names if n != self.REPORT] + [n for n in names if n == self.REPORT]
        out = []
        for name in ordered:
            dst = os.path.join(self.final_dir, name)
            os.replace(self.file(name), dst)
            out.append(dst)
        shutil.rmtree(self.path, ignore_errors=True)
        return out

    def discard(self, would_write: Iterable[str], failed_report: Optional[str] = None) -> None:
        """Drop the staging folder and stale artifacts; optionally leave a failure report.

        Args:
            would_write: artifact names this run would have published.
            failed_report: JSON text for ``report.failed.json``, or None.
        """
        shutil.rmtree(self.path, ignore_errors=True)
        for name in list(would_write) + [self.REPORT]:
            stale = os.path.join(self.final_dir, name)
            if os.path.isfile(stale):
                os.unlink(stale)
        if failed_report is not None:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.final_dir)
            with os.fdopen(fd, "w") as f:
                f.write(failed_report)
            _publishable(tmp)
            os.replace(tmp, os.path.join(self.final_dir, self.FAILED_REPORT))
