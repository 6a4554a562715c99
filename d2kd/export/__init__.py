"""Export the distilled student alone: stock checkpoint, ONNX, parity gate, latency.

Export
------
::

    python tools/export_student.py --config-file configs/quickstart/mse_R18_from_R18w.py \\
        --checkpoint output/quickstart/mse/model_final.pth --output output/quickstart/mse/export \\
        [--int8] [--fp16] [--num-parity-images 16] [--eval-images 200] [--opts train.device=cpu]

writes into ``--output`` (all at once, only when every check passes):

* ``student_model.pth``: ``{"model": student state dict}``, stock Detectron2 layout. The teacher,
  KD parts (adapters, context blocks, assistants, generators), optimizer and trainer state are
  dropped; the file must load into ``instantiate(cfg.model.student)`` (``cfg.model`` for a plain
  recipe) with zero missing, unexpected or mis-shaped keys.
* ``student_e2e.onnx`` (+ ``student_raw.onnx`` for RetinaNet/FCOS): the student alone. Input
  ``image`` float32 (1,3,H,W): the test-time resized image in the model's input format (BGR
  0-255 by default), any H, W; normalisation and padding are inside the graph, the final rescale
  to the original size is :func:`d2kd.export.parity.postprocess`. RetinaNet/FCOS: dynamo
  exporter, opset 18, decode + class-aware NMS in the graph, outputs padded to max_det rows
  (score 0 = padding). Faster R-CNN: legacy exporter with detectron2's TracingAdapter, opset 17.
* ``student_e2e_int8.onnx`` / ``student_e2e_fp16.onnx`` with ``--int8`` / ``--fp16``.
* ``report.json``: what was exported, tolerances, max differences, AP and ΔAP per variant. A
  failed run publishes nothing (no ``*.onnx``) and leaves ``report.failed.json``; exit code 1.

The gate (tolerances in :class:`d2kd.export.parity.Tolerances`, shared/export-notes.md §4.3):

1. structure: ``onnx.checker`` (full check), opset >= 17, NonMaxSuppression in e2e graphs,
   RoiAlign ``half_pixel``, weights <= 1.1x the student's fp32 parameters (no teacher inside);
2. raw tensors (dense): ``|ort - torch| <= 1e-4 + 1e-3 |torch|`` on test images and a crop of
   another size;
3. detections vs the stock ``model(inputs)`` on ``--num-parity-images`` test images (+ a crop):
   order-insensitive, same class, box L-inf <= 1e-2 px, |Δscore| <= 1e-4, >= 99% matched;
4. COCO AP with the recipe's evaluator on ``--eval-images`` test images: |ΔAP| <= 0.1 for fp32,
   <= ``--int8-max-dap`` (1.0) for int8 (static QDQ, calibrated on ``--calibration-images``
   train images), <= ``--fp16-max-dap`` (0.5) for fp16 (skipped with a message unless
   onnxruntime has its CUDA provider: the CPU provider has few fp16 kernels).

Useful flags: ``--format none`` (stripped checkpoint only), ``--allow-foreign`` (a checkpoint
without d2kd's ``"d2kd"`` key), ``--unsafe-load`` (``weights_only=False`` for trusted files that
safe loading refuses), ``--exporter legacy`` (dense detectors without onnxscript), ``--opset``.

Latency
-------
::

    python tools/benchmark_latency.py --config-files STUDENT_RECIPE TEACHER_RECIPE \\
        [--checkpoints S.pth T.pth] [--onnx S.onnx T.onnx] [--threads 2] [--runs 30] \\
        [--warmup 3] [--size 512 512] [--int8] [--ap student=31.2 teacher=36.5] --out DIR

times onnxruntime (CPU; ``--cuda`` for its CUDA provider) and PyTorch eager on the same input in interleaved
randomised rounds, and writes ``latency.json``, ``latency.md`` (p50/p90/p99 per candidate, the
median paired student/teacher, ORT/eager and int8/fp32 ratios with bootstrap 95% CIs, fvcore
GFLOPs and parameters) and ``latency.png`` (latency vs AP, when AP values are given or found in
an export ``report.json`` next to ``--onnx``). Random weights are fine for latency; compare ratios
from one run, not absolute milliseconds across runs.

Import rule: this package needs a model and weights, never a trainer or a KD loss.

:func:`export_student` below is the whole export pipeline (the CLI is a thin wrapper around it).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from .strip import (
    ExportError,
    StagingDir,
    build_student,
    check_state_dict,
    file_sha256,
    load_checkpoint,
    save_student_checkpoint,
    strip_checkpoint,
    student_node,
)

__all__ = ["ExportError", "GateFailed", "export_student", "student_node", "load_recipe"]

logger = logging.getLogger(__name__)

STUDENT_CKPT = "student_model.pth"


class GateFailed(ExportError):
    """The parity gate failed; ``report`` holds every measurement and failure."""

    def __init__(self, message: str, report: Dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def load_recipe(config_file: str, opts: Sequence[str] = ()) -> Any:
    """``LazyConfig.load`` + command-line overrides, with every device set to the CPU."""
    from detectron2.config import LazyConfig

    if not os.path.isfile(config_file):
        raise ExportError(f"[export] config file {config_file} does not exist")
    try:
        cfg = LazyConfig.load(config_file)
        cfg = LazyConfig.apply_overrides(cfg, list(opts))
    except Exception as e:
        raise ExportError(f"[export] could not load recipe {config_file}: {e}") from e
    if "model" not in cfg:
        raise ExportError(f"[export] recipe {config_file} defines no `model`")
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
    """Strip, export, check and publish the student of a recipe; see the module docstring.

    Args:
        config_file: LazyConfig recipe (distillation or plain).
        checkpoint: a d2kd checkpoint (``model_final.pth``).
        output: output folder; artifacts appear there only if every check passes.
        fmt: ``"onnx"`` or ``"none"`` (only the stripped checkpoint).
        fp16, int8: also write and gate those variants.
        num_parity_images: test images for the detection comparison.
        eval_images: test images for AP (0: the whole test set).
        opts: LazyConfig overrides ``key=value``.
        allow_foreign: accept a checkpoint without the ``d2kd`` key.
        unsafe_load: retry ``torch.load`` with ``weights_only=False`` when safe loading refuses.
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
    recorded = (ckpt.get("d2kd") or {}).get("student")
    if recorded and recorded != type(model).__name__:
        raise ExportError(
            f"[export] {checkpoint} holds a {recorded} student but {config_file} builds a "
            f"{type(model).__name__}"
        )
    check_state_dict(model, state, checkpoint)
    names = {
        "ckpt": STUDENT_CKPT,
        "e2e": "student_e2e.onnx",
        "raw": "student_raw.onnx",
        "int8": "student_e2e_int8.onnx",
        "fp16": "student_e2e_fp16.onnx",
    }
    would_write = [STUDENT_CKPT] + ([] if fmt == "none" else list(names.values())[1:])
    report: Dict[str, Any] = {
        "status": "running",
        "config": os.path.abspath(config_file),
        "checkpoint": os.path.abspath(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "model": type(model).__name__,
        "dropped_checkpoint_keys": sorted(k for k in ckpt if k != "model"),
        "versions": _versions(),
        "tolerances": tol.as_dict(),
        "variants": {},
        "failures": [],
    }
    del ckpt
    stage = StagingDir(output)
    written: List[str] = []
    try:
        # 1. the stock checkpoint, re-read from disk into a fresh student: what users will load
        save_student_checkpoint(state, stage.file(STUDENT_CKPT))
        reread = torch.load(stage.file(STUDENT_CKPT), map_location="cpu", weights_only=True)
        if sorted(reread) != ["model"]:
            raise ExportError(
                f"[export] {STUDENT_CKPT} has keys {sorted(reread)}, expected ['model']"
            )
        model = build_student(cfg, reread["model"], STUDENT_CKPT)
        written.append(STUDENT_CKPT)
        report["student_checkpoint"] = {
            "file": STUDENT_CKPT,
            "keys": len(reread["model"]),
            "parameters": sum(p.numel() for p in model.parameters()),
            "missing": 0,
            "unexpected": 0,
            "mis_shaped": 0,
        }
        if fmt == "onnx":
            written += _export_and_gate(
                cfg,
                model,
                stage,
                names,
                report,
                tol,
                exporter,
                opset,
                num_parity_images,
                eval_images,
                int8,
                fp16,
                calibration_images,
            )
        report["status"] = "passed"
        report["seconds"] = round(time.time() - t0, 1)
        with open(stage.file(StagingDir.REPORT), "w") as f:
            json.dump(report, f, indent=2, default=str)
        stage.publish(written + [StagingDir.REPORT])
        return report
    except BaseException as e:
        report["status"] = "failed"
        report["error"] = str(e)
        stage.discard(would_write, json.dumps(report, indent=2, default=str))
        raise


def _export_and_gate(
    cfg, model, stage, names, report, tol, exporter, opset, n_parity, n_eval, int8, fp16, n_calib
) -> List[str]:
    """Steps 2-4 of :func:`export_student`; returns the file names written to ``stage``."""
    from detectron2.config import instantiate

    from . import onnx_export as ox
    from . import parity as px

    n_load = 0 if n_eval == 0 else max(n_parity, n_eval)
    inputs = px.load_inputs(cfg.dataloader.test, n_load)
    if not inputs:
        raise ExportError("[export] the recipe's test loader yielded no images")
    dataset = cfg.dataloader.test.dataset.get("names", "?")
    report["images"] = {
        "dataset": dataset,
        "parity": min(n_parity, len(inputs)),
        "eval": len(inputs) if n_eval == 0 else min(n_eval, len(inputs)),
    }
    parity_in = inputs[:n_parity] + [px.crop_input(inputs[0])]
    eval_in = inputs[: report["images"]["eval"]]
    sample = inputs[0]["image"].float()[None]
    paths = {k: stage.file(v) for k, v in names.items()}
    clock = _Clock(report)
    graphs = ox.export_onnx(model, sample, paths, exporter=exporter, opset=opset)
    clock("export")
    fp32: Dict[str, Any] = {"files": {}, "exporter": graphs[0].exporter, "opset": graphs[0].opset}
    report["variants"]["fp32"] = fp32
    report["input_contract"] = ox.INPUT_CONTRACT
    meta = _metadata(cfg, model, report, graphs[0])
    for g in graphs:
        fp32["files"][g.kind] = os.path.basename(g.path)
        fp32.setdefault("graphs", {})[g.kind] = px.check_graph(g, model)
        ox.add_metadata(g.path, dict(meta, graph=g.kind, outputs=g.output_names))
    failures: List[str] = []
    clock("structure_checks")

    ref_cache: Dict[int, Any] = {}

    def ref(x: Dict[str, Any]) -> Any:  # PyTorch detections, computed once per input
        if id(x) not in ref_cache:
            ref_cache[id(x)] = px.torch_detections(model, x)
        return ref_cache[id(x)]

    ap_torch = px.evaluate_ap(
        instantiate(cfg.dataloader.evaluator), eval_in, [ref(x) for x in eval_in]
    )
    report["ap_torch"] = ap_torch
    clock("torch_reference")
    thresh, max_det = _score_thresh(model), _max_det(model)

    if "raw" in fp32["files"]:
        from .dense_wrapper import DenseExportWrapper

        wrapper = DenseExportWrapper(model, "raw").eval()
        ort_raw = px.OrtDetector(paths["raw"])
        raw_in = parity_in[: min(4, len(parity_in) - 1)] + [parity_in[-1]]

        def raw_torch(x: Dict[str, Any]) -> Dict[str, Any]:
            with torch.no_grad():
                outs = wrapper(x["image"].float()[None])
            return {n: o.numpy() for n, o in zip(wrapper.output_names, outs)}

        t_out = [raw_torch(x) for x in raw_in]
        o_out = [ort_raw.run(px.as_batch(x["image"])) for x in raw_in]
        raw = px.compare_raw(
            t_out, o_out, wrapper.output_names, tol, [x.get("image_id") for x in raw_in]
        )
        fp32["raw"] = {"max_abs": raw["max_abs"], "passed": raw["passed"], "images": len(raw_in)}
        failures += [f"fp32 raw: {m}" for m in raw["failures"]]
        clock("raw_parity")

    def run_variant(key: str, path: str, max_dap: float, gate_detections: bool, cuda=False):
        entry = report["variants"][key]
        det = px.OrtDetector(path, cuda=cuda)
        cache = {id(x): det.detections(x) for x in parity_in}
        stats = {"required": 0, "matched": 0, "max_box_px": 0.0, "max_score": 0.0}
        fails: List[str] = []
        for x in parity_in:
            s, f = px.match_detections(
                ref(x), cache[id(x)], tol, thresh, max_det, x.get("image_id")
            )
            for k in ("required", "matched"):
                stats[k] += s[k]
            for k in ("max_box_px", "max_score"):
                stats[k] = max(stats[k], s[k])
            fails += f
        stats["fraction"] = stats["matched"] / stats["required"] if stats["required"] else 1.0
        if not stats["required"]:
            report.setdefault("warnings", []).append(
                f"{key}: no detections above the score threshold on the parity images: the "
                "detection comparison is vacuous (AP and raw tensors still checked)"
            )
        entry["detections"] = stats
        entry["unmatched_examples"] = fails[:5]
        got_eval = [cache[id(x)] if id(x) in cache else det.detections(x) for x in eval_in]
        entry["ap"] = px.evaluate_ap(instantiate(cfg.dataloader.evaluator), eval_in, got_eval)
        entry["delta_ap"] = px.ap_delta(ap_torch, entry["ap"])
        entry["max_abs_delta_ap"] = max_dap
        ok_ap = abs(entry["delta_ap"]) <= max_dap
        ok_det = stats["fraction"] >= tol.min_match
        if not ok_ap:
            failures.append(
                f"{key}: |ΔAP| = {abs(entry['delta_ap']):.3f} > {max_dap} "
                f"(torch AP {ap_torch.get('AP')}, ONNX AP {entry['ap'].get('AP')})"
            )
        if gate_detections:
            if not ok_det:
                failures.append(
                    f"{key}: {stats['matched']}/{stats['required']} detections "
                    f"matched ({stats['fraction']:.4f} < {tol.min_match})"
                )
                failures.extend(f"{key}: {m}" for m in fails[:10])
            entry["passed"] = (
                ok_ap
                and ok_det
                and not (key == "fp32" and "raw" in fp32 and not fp32["raw"]["passed"])
            )
        else:
            entry["passed"] = ok_ap

    run_variant("fp32", paths["e2e"], tol.max_dap, gate_detections=True)
    clock("fp32_parity_and_ap")
    written = list(fp32["files"].values())

    if int8:
        calib, source = ox.calibration_images(cfg, n_calib, inputs)
        report["variants"]["int8"] = info = {"files": {"e2e": names["int8"]}, "calibration": source}
        info.update(ox.quantize_int8(paths["e2e"], paths["int8"], calib))
        run_variant("int8", paths["int8"], tol.int8_max_dap, gate_detections=False)
        written.append(names["int8"])
        clock("int8")
    if fp16:
        import onnxruntime

        report["variants"]["fp16"] = info = {"files": {"e2e": names["fp16"]}}
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            info.update(
                status="skipped",
                reason="no CUDA execution provider: fp16 is a GPU "
                "feature, onnxruntime's CPU provider has few fp16 kernels (notes §2.2)",
            )
            logger.warning("[export] fp16 skipped: %s", info["reason"])
        else:
            info.update(ox.convert_fp16(paths["e2e"], paths["fp16"]))
            run_variant("fp16", paths["fp16"], tol.fp16_max_dap, gate_detections=False, cuda=True)
            written.append(names["fp16"])
    report["failures"] = failures
    if failures:
        raise GateFailed("[export] parity gate failed:\n  " + "\n  ".join(failures[:20]), report)
    return written


class _Clock:
    """Records seconds per stage into ``report["timings_s"]``."""

    def __init__(self, report: Dict[str, Any]) -> None:
        self.t = time.time()
        self.out = report.setdefault("timings_s", {})

    def __call__(self, stage: str) -> None:
        now = time.time()
        self.out[stage] = round(now - self.t, 2)
        self.t = now


def _score_thresh(model: torch.nn.Module) -> float:
    if hasattr(model, "test_score_thresh"):
        return float(model.test_score_thresh)
    return float(model.roi_heads.box_predictor.test_score_thresh)


def _max_det(model: torch.nn.Module) -> int:
    if hasattr(model, "max_detections_per_image"):
        return int(model.max_detections_per_image)
    return int(model.roi_heads.box_predictor.test_topk_per_image)


def _metadata(cfg: Any, model: torch.nn.Module, report: Dict[str, Any], graph: Any) -> Dict:
    """Provenance stored in every ONNX file's metadata_props (export-notes §4.1.3)."""
    from detectron2.data import MetadataCatalog

    names = cfg.dataloader.test.dataset.get("names", None)
    name = names[0] if isinstance(names, (list, tuple)) else names
    classes = list(MetadataCatalog.get(name).get("thing_classes", [])) if name else []
    return {
        "format": 1,
        "model": type(model).__name__,
        "exporter": graph.exporter,
        "opset": graph.opset,
        "input_contract": report["input_contract"],
        "input_format": getattr(model, "input_format", "BGR"),
        "pixel_mean": model.pixel_mean.flatten().tolist(),
        "pixel_std": model.pixel_std.flatten().tolist(),
        "size_divisibility": int(model.backbone.size_divisibility),
        "score_thresh": _score_thresh(model),
        "max_det": _max_det(model),
        "thing_classes": classes,
        "checkpoint_sha256": report["checkpoint_sha256"],
        "config": report["config"],
    }
