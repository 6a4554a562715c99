"""The export pipeline: strip, export, gate, publish (``tools/export_student.py`` wraps it).

Order matters. The stripped checkpoint is written first and re-read from disk into a fresh
student, so every later step checks the file users will load, not the in-memory weights. The
gate (:mod:`d2kd.export.gate`) then exports and compares the graphs, and only a run whose every
check passed publishes anything (:class:`~d2kd.export.staging.StagingDir`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..utils.checkpoint_io import read_checkpoint
from ..utils.files import clean_nan, sha256_file
from .errors import ExportError
from .staging import StagingDir
from .strip import (
    build_student,
    check_state_dict,
    load_checkpoint,
    recorded_student,
    save_student_checkpoint,
    strip_checkpoint,
)

__all__ = ["export_student", "load_recipe", "STUDENT_CKPT", "GRAPH_FILES"]

logger = logging.getLogger(__name__)

STUDENT_CKPT = "student_model.pth"
#: The graph files an ONNX export may write, by variant.
GRAPH_FILES = {
    "e2e": "student_e2e.onnx",
    "raw": "student_raw.onnx",
    "int8": "student_e2e_int8.onnx",
    "fp16": "student_e2e_fp16.onnx",
}


def load_recipe(config_file: str, opts: Sequence[str] = ()) -> Any:
    """The recipe with its overrides, refused like ``train_net`` refuses them; devices on CPU.

    Raises:
        ExportError: a missing recipe, a recipe without ``model``, or an unknown override key
            (the message names the closest existing keys).
    """
    from ..config import ConfigError, load_config

    try:
        cfg = load_config(config_file, list(opts), required=("model",), owner="export")
    except (FileNotFoundError, ConfigError) as e:
        raise ExportError(str(e)) from e
    except Exception as e:  # a recipe that does not even import
        raise ExportError(f"[export] could not load recipe {config_file}: {e}") from e
    if "train" in cfg and "device" in cfg.train:
        cfg.train.device = "cpu"
    return cfg


def _versions() -> Dict[str, str]:
    import detectron2
    import onnx
    import onnxruntime

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "detectron2": detectron2.__version__,
        "python": platform.python_version(),
    }


def export_student(
    config_file: str,
    checkpoint: str,
    output: str,
    *,
    fmt: str = "onnx",
    fp16: bool = False,
    int8: bool = False,
    num_parity_images: int = 16,
    eval_images: int = 200,
    opts: Sequence[str] = (),
    allow_foreign: bool = False,
    unsafe_load: bool = False,
    exporter: str = "auto",
    opset: Optional[int] = None,
    tolerances: Optional[Any] = None,
    calibration_images: int = 32,
) -> Dict[str, Any]:
    """Strip, export, check and publish the student of a recipe (README "Export and latency").

    Args:
        config_file: LazyConfig recipe (distillation or plain).
        checkpoint: a d2kd checkpoint (``model_final.pth``).
        output: output folder; artifacts appear there only if every check passes.
        fmt: ``"onnx"`` or ``"none"`` (only the stripped checkpoint).
        fp16, int8: also write and gate those variants.
        num_parity_images: test images for the detection comparison.
        eval_images: test images for AP (0: the whole test set).
        opts: overrides ``key=value`` (an unknown key is an error; ``+key=value`` adds one).
        allow_foreign: accept a checkpoint without the ``d2kd`` key.
        unsafe_load: the checkpoint reader's opt-out for trusted files (a full unpickle).
        exporter: ``auto``, ``dynamo`` or ``legacy``.
        opset: ONNX opset (>= 17); default per exporter.
        tolerances: a :class:`~d2kd.export.parity.Tolerances`.
        calibration_images: int8 calibration images (from the recipe's train set).

    Returns:
        The report (also written as ``report.json``).

    Raises:
        ExportError: bad inputs or a failed export; GateFailed: the parity gate failed.
    """
    from .parity import Tolerances

    tol = tolerances or Tolerances()
    if fmt not in ("onnx", "none"):
        raise ExportError(f"[export] --format must be onnx or none, got {fmt!r}")
    t0 = time.time()
    cfg = load_recipe(config_file, opts)
    ckpt = load_checkpoint(checkpoint, allow_foreign=allow_foreign, unsafe_load=unsafe_load)
    state = strip_checkpoint(ckpt, checkpoint)
    model = build_student(cfg, None)
    recorded = recorded_student(ckpt)
    if recorded and recorded != type(model).__name__:
        raise ExportError(
            f"[export] {checkpoint} holds a {recorded} student but {config_file} builds a "
            f"{type(model).__name__}"
        )
    check_state_dict(model, state, checkpoint)
    would_write = [STUDENT_CKPT] + ([] if fmt == "none" else list(GRAPH_FILES.values()))
    report: Dict[str, Any] = {
        "status": "running",
        "config": os.path.abspath(config_file),
        "checkpoint": os.path.abspath(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "model": type(model).__name__,
        "dropped_checkpoint_keys": sorted(str(k) for k in ckpt if k != "model"),
        "versions": _versions(),
        "tolerances": tol.as_dict(),
        "variants": {},
        "failures": [],
    }
    del ckpt
    stage = StagingDir(output)
    written: List[str] = []
    try:
        model = _write_student_checkpoint(cfg, state, stage, report)
        written.append(STUDENT_CKPT)
        if fmt == "onnx":
            from .gate import Gate

            gate = Gate(cfg, model, stage, report, tol)
            written += gate.run(
                exporter=exporter,
                opset=opset,
                n_parity=num_parity_images,
                n_eval=eval_images,
                int8=int8,
                fp16=fp16,
                n_calib=calibration_images,
            )
        report["status"] = "passed"
        report["seconds"] = round(time.time() - t0, 1)
        stage.write_report(report)
        stage.publish(written + [StagingDir.REPORT])
        return report
    except BaseException as e:
        report["status"] = "failed"
        report["error"] = str(e)
        stage.discard(would_write, json.dumps(clean_nan(report), indent=2, default=str))
        raise


def _write_student_checkpoint(cfg: Any, state, stage: StagingDir, report: Dict[str, Any]):
    """Save the stock checkpoint and rebuild the student from the file: what users will load."""
    path = stage.file(STUDENT_CKPT)
    save_student_checkpoint(state, path)
    reread = read_checkpoint(path)
    if sorted(reread) != ["model"]:
        raise ExportError(f"[export] {STUDENT_CKPT} has keys {sorted(reread)}, expected ['model']")
    model = build_student(cfg, reread["model"], STUDENT_CKPT)
    report["student_checkpoint"] = {
        "file": STUDENT_CKPT,
        "keys": len(reread["model"]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "missing": 0,
        "unexpected": 0,
        "mis_shaped": 0,
    }
    return model
