"""The parity gate: export the student's graphs, then hold them against PyTorch.

Four levels, cheapest first (tolerances in :class:`~d2kd.export.parity.Tolerances`,
shared/export-notes.md §4.3): graph structure; raw tensors (dense detectors); detections
against the stock ``model(inputs)``; COCO AP on the recipe's test images. fp32 must pass all of
them. int8 and fp16 change the numbers by design, so their detections are not matched against
fp32 tolerances: they are judged by |ΔAP| alone.

A check that compared nothing fails: 0/0 matched detections, or AP NaN on both sides (no
detections or no annotations), would otherwise read as a pass for a model that detects nothing.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, Optional

import torch

from .errors import ExportError, GateFailed
from .pipeline import GRAPH_FILES
from .staging import StagingDir

__all__ = ["Gate"]

logger = logging.getLogger(__name__)


class Gate:
    """Exports the graphs into a staging folder and checks them, filling ``report``.

    Args:
        cfg: the recipe (test loader, evaluator, train set for int8 calibration).
        model: the student rebuilt from the stripped checkpoint, in eval mode.
        stage: where the graphs are written.
        report: the export report; this fills ``variants``, ``images``, ``ap_torch`` and more.
        tol: the tolerances.
    """

    def __init__(self, cfg: Any, model: torch.nn.Module, stage: StagingDir, report, tol) -> None:
        self.cfg, self.model, self.report, self.tol = cfg, model, report, tol
        self.paths = {k: stage.file(v) for k, v in GRAPH_FILES.items()}
        self.failures: List[str] = []
        self._ref: Dict[int, Any] = {}
        self._t = time.time()

    def run(
        self,
        *,
        exporter: str,
        opset: Optional[int],
        n_parity: int,
        n_eval: int,
        int8: bool,
        fp16: bool,
        n_calib: int,
    ) -> List[str]:
        """Export and check every variant; returns the file names written to the stage.

        Raises:
            GateFailed: any check failed (``report["failures"]`` lists them all).
        """
        from . import onnx_export as ox
        from . import parity as px
        from . import quantize as qz
        from .structure import check_graph

        cfg, model, report = self.cfg, self.model, self.report
        n_load = 0 if n_eval == 0 else max(n_parity, n_eval)
        inputs = px.load_inputs(cfg.dataloader.test, n_load)
        if not inputs:
            raise ExportError("[export] the recipe's test loader yielded no images")
        report["images"] = {
            "dataset": cfg.dataloader.test.dataset.get("names", "?"),
            "parity": min(n_parity, len(inputs)),
            "eval": len(inputs) if n_eval == 0 else min(n_eval, len(inputs)),
        }
        self.parity_in = inputs[:n_parity] + [px.crop_input(inputs[0])]
        self.eval_in = inputs[: report["images"]["eval"]]
        graphs = ox.export_onnx(
            model, inputs[0]["image"].float()[None], self.paths, exporter=exporter, opset=opset
        )
        self._clock("export")
        fp32: Dict[str, Any] = {
            "files": {},
            "exporter": graphs[0].exporter,
            "opset": graphs[0].opset,
        }
        report["variants"]["fp32"] = fp32
        report["input_contract"] = ox.INPUT_CONTRACT
        meta = _metadata(cfg, model, report, graphs[0])
        for g in graphs:
            fp32["files"][g.kind] = os.path.basename(g.path)
            fp32.setdefault("graphs", {})[g.kind] = check_graph(g, model)
            ox.add_metadata(g.path, dict(meta, graph=g.kind, outputs=g.output_names))
        self._clock("structure_checks")

        refs = [self._ref_of(x) for x in self.eval_in]
        self.ap_torch = px.evaluate_ap(self._evaluator(), self.eval_in, refs)
        report["ap_torch"] = self.ap_torch
        self._clock("torch_reference")
        if "raw" in fp32["files"]:
            self._raw_parity(fp32)
            self._clock("raw_parity")
        self._variant("fp32", self.paths["e2e"], self.tol.max_dap, gate_detections=True)
        self._clock("fp32_parity_and_ap")
        written = list(fp32["files"].values())

        if int8:
            calib, source = qz.calibration_images(cfg, n_calib, inputs)
            info = {"files": {"e2e": GRAPH_FILES["int8"]}, "calibration": source}
            report["variants"]["int8"] = info
            info.update(qz.quantize_int8(self.paths["e2e"], self.paths["int8"], calib))
            if info["fp32_convs"]:
                report.setdefault("warnings", []).append(
                    f"int8: onnxruntime still runs {info['fp32_convs']} convolutions in fp32 "
                    "(a Q/DQ pattern it could not fuse): expect little speed-up"
                )
            self._variant("int8", self.paths["int8"], self.tol.int8_max_dap, gate_detections=False)
            written.append(GRAPH_FILES["int8"])
            self._clock("int8")
        if fp16:
            written += self._fp16()
        report["failures"] = self.failures
        if self.failures:
            raise GateFailed(
                "[export] parity gate failed:\n  " + "\n  ".join(self.failures[:20]), report
            )
        return written

    def _evaluator(self) -> Any:
        from detectron2.config import instantiate

        return instantiate(self.cfg.dataloader.evaluator)

    def _ref_of(self, x: Dict[str, Any]) -> Any:
        """PyTorch detections of one input, computed once."""
        from .parity import torch_detections

        if id(x) not in self._ref:
            self._ref[id(x)] = torch_detections(self.model, x)
        return self._ref[id(x)]

    def _raw_parity(self, fp32: Dict[str, Any]) -> None:
        """Raw head tensors of ``student_raw.onnx`` against the wrapper's in PyTorch."""
        from . import parity as px
        from .dense_wrapper import DenseExportWrapper

        wrapper = DenseExportWrapper(self.model, "raw").eval()
        ort_raw = px.OrtDetector(self.paths["raw"])
        raw_in = self.parity_in[: min(4, len(self.parity_in) - 1)] + [self.parity_in[-1]]
        t_out = []
        for x in raw_in:
            with torch.no_grad():
                outs = wrapper(x["image"].float()[None])
            t_out.append({n: o.numpy() for n, o in zip(wrapper.output_names, outs)})
        o_out = [ort_raw.run(px.as_batch(x["image"])) for x in raw_in]
        labels = [x.get("image_id") for x in raw_in]
        raw = px.compare_raw(t_out, o_out, wrapper.output_names, self.tol, labels)
        fp32["raw"] = {"max_abs": raw["max_abs"], "passed": raw["passed"], "images": len(raw_in)}
        self.failures += [f"fp32 raw: {m}" for m in raw["failures"]]

    def _variant(
        self, key: str, path: str, max_dap: float, gate_detections: bool, cuda: bool = False
    ) -> None:
        """Detections (when gated) and ΔAP of one graph; failures go to ``self.failures``."""
        from . import parity as px

        entry, tol = self.report["variants"][key], self.tol
        det = px.OrtDetector(path, cuda=cuda)
        got: Dict[int, Any] = {}
        ok_det = True
        if gate_detections:
            got = {id(x): det.detections(x) for x in self.parity_in}
            ok_det = self._match(key, entry, got)
        got_eval = [got[id(x)] if id(x) in got else det.detections(x) for x in self.eval_in]
        if not gate_detections:
            entry["detections"] = {
                "gated": False,
                "reason": f"{key} is judged by |ΔAP| <= {max_dap}, not by fp32 tolerances",
                "torch": sum(len(self._ref_of(x).scores) for x in self.eval_in),
                "onnx": sum(len(d.scores) for d in got_eval),
                "images": len(self.eval_in),
            }
        entry["ap"] = px.evaluate_ap(self._evaluator(), self.eval_in, got_eval)
        entry["delta_ap"] = px.ap_delta(self.ap_torch, entry["ap"])
        entry["max_abs_delta_ap"] = max_dap
        ok_ap = entry["delta_ap"] is not None and abs(entry["delta_ap"]) <= max_dap
        if entry["delta_ap"] is None:
            self.failures.append(f"{key}: AP compared nothing: {self._why_no_ap(got_eval)}")
        elif not ok_ap:
            self.failures.append(
                f"{key}: |ΔAP| = {abs(entry['delta_ap']):.3f} > {max_dap} "
                f"(torch AP {self.ap_torch.get('AP')}, ONNX AP {entry['ap'].get('AP')})"
            )
        raw = self.report["variants"]["fp32"].get("raw", {})
        raw_ok = key != "fp32" or raw.get("passed", True)
        entry["passed"] = ok_ap and ok_det and raw_ok

    def _match(self, key: str, entry: Dict[str, Any], got: Dict[int, Any]) -> bool:
        """Order-insensitive matching on the parity images; False (and failures) when it fails
        or when there was nothing to match."""
        from .parity import match_detections

        tol, thresh, max_det = self.tol, _score_thresh(self.model), _max_det(self.model)
        stats = {"gated": True, "required": 0, "matched": 0, "max_box_px": 0.0, "max_score": 0.0}
        fails: List[str] = []
        for x in self.parity_in:
            s, f = match_detections(
                self._ref_of(x), got[id(x)], tol, thresh, max_det, x.get("image_id")
            )
            for k in ("required", "matched"):
                stats[k] += s[k]
            for k in ("max_box_px", "max_score"):
                stats[k] = max(stats[k], s[k])
            fails += f
        stats["fraction"] = stats["matched"] / stats["required"] if stats["required"] else None
        entry["detections"] = stats
        entry["unmatched_examples"] = fails[:5]
        if not stats["required"]:
            self.failures.append(
                f"{key}: nothing was compared: neither PyTorch nor ONNX has a detection scoring "
                f">= {thresh + tol.score_margin:g} (the model's score threshold {thresh:g} + "
                f"{tol.score_margin:g}) on the {len(self.parity_in)} parity images, so 0/0 "
                "matched. The model produces no detections: an untrained or wrongly loaded "
                "checkpoint, or a recipe whose test images hold no objects?"
            )
            return False
        if stats["fraction"] < tol.min_match:
            self.failures.append(
                f"{key}: {stats['matched']}/{stats['required']} detections matched "
                f"({stats['fraction']:.4f} < {tol.min_match})"
            )
            self.failures.extend(f"{key}: {m}" for m in fails[:10])
            return False
        return True

    def _why_no_ap(self, got_eval: List[Any]) -> str:
        n_ref = sum(len(self._ref_of(x).scores) for x in self.eval_in)
        n_got = sum(len(d.scores) for d in got_eval)
        n = len(self.eval_in)
        if n_ref == 0 and n_got == 0:
            return (
                f"AP is NaN for PyTorch and ONNX: neither produced a detection on the {n} eval "
                "images (an untrained or wrongly loaded checkpoint?)"
            )
        return (
            f"AP is NaN for PyTorch and ONNX although they produced {n_ref} and {n_got} "
            f"detections on the {n} eval images: the images have no annotations, or the "
            "recipe's evaluator reports no box AP"
        )

    def _fp16(self) -> List[str]:
        import onnxruntime

        from . import quantize as qz

        info = {"files": {"e2e": GRAPH_FILES["fp16"]}}
        self.report["variants"]["fp16"] = info
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            info.update(
                status="skipped",
                reason="no CUDA execution provider: fp16 is a GPU feature, onnxruntime's CPU "
                "provider has few fp16 kernels (notes §2.2)",
            )
            logger.warning("[export] fp16 skipped: %s", info["reason"])
            return []
        info.update(qz.convert_fp16(self.paths["e2e"], self.paths["fp16"]))
        self._variant("fp16", self.paths["fp16"], self.tol.fp16_max_dap, False, cuda=True)
        return [GRAPH_FILES["fp16"]]

    def _clock(self, stage: str) -> None:
        """Seconds since the previous stage, into ``report["timings_s"]``."""
        now = time.time()
        self.report.setdefault("timings_s", {})[stage] = round(now - self._t, 2)
        self._t = now


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
