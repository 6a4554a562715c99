"""Parity gate: onnxruntime against PyTorch on real test images.

Three levels (shared/export-notes.md §4.3), each with its tolerance in :class:`Tolerances`:

1. raw tensors (dense detectors): ``|ort - torch| <= atol + rtol * |torch|`` element-wise, on test
   images and on one crop of another size (catches sizes baked into the graph);
2. detections of the e2e graph after :func:`graph_detections`, against the stock detectron2
   ``model(batched_inputs)``: order-insensitive matching within the same class, box L-inf and
   |score| difference; never index by index (near-tied scores reorder under 1e-7 noise) and
   never by IoU (degenerate boxes give NaN);
3. COCO AP with the recipe's own evaluator on the same images: ``|AP_onnx - AP_torch|``.

Before all three, :func:`d2kd.export.structure.check_graph` checks the structure of each file.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = [
    "Tolerances",
    "Detections",
    "make_session",
    "OrtDetector",
    "graph_detections",
    "torch_detections",
    "match_detections",
    "compare_raw",
    "evaluate_ap",
    "ap_delta",
    "load_inputs",
    "crop_input",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerances:
    """What the gate accepts. Observed fp32 errors on this machine are 10-100x smaller.

    Attributes:
        box_px: max box L-inf difference, original-image pixels (observed <= 6.1e-4 px).
        score: max |score difference| (observed <= 2.4e-6).
        raw_rtol, raw_atol: raw tensor tolerance (observed <= 2.1e-5 abs on logits).
        min_match: fraction of required detections that must match, over all images.
        score_margin: reference detections scoring below ``score_thresh + score_margin`` are
            optional (threshold noise may drop them on either side).
        max_dap: fp32 gate on ``|AP_onnx - AP_torch|`` in AP points (detectron2's "0.1 AP").
        int8_max_dap: int8 gate (looser: int8 is judged by AP, not by tensors).
        fp16_max_dap: fp16 gate.
    """

    box_px: float = 1e-2
    score: float = 1e-4
    raw_rtol: float = 1e-3
    raw_atol: float = 1e-4
    min_match: float = 0.99
    score_margin: float = 1e-3
    max_dap: float = 0.1
    int8_max_dap: float = 1.0
    fp16_max_dap: float = 0.5

    def as_dict(self) -> Dict[str, float]:
        """The tolerances, for the report."""
        return asdict(self)


class Detections(NamedTuple):
    """Detections of one image in original-image pixels: boxes (N,4) xyxy, scores (N,), classes
    (N,) int64."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def make_session(path: str, threads: Optional[int] = None, cuda: bool = False) -> Any:
    """An onnxruntime session: all graph optimisations, sequential, fixed intra-op threads.

    Args:
        path: ONNX file.
        threads: intra-op threads (None: onnxruntime's default).
        cuda: use the CUDA execution provider when onnxruntime has it (CPU otherwise).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    providers = ["CPUExecutionProvider"]
    if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(path, so, providers=providers)


def graph_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    in_hw: Tuple[int, int],
    out_hw: Tuple[int, int],
) -> Detections:
    """Graph outputs -> detections in the original image, through detectron2's own
    ``detector_postprocess`` (scale to ``out_hw``, clip, drop empty boxes), as ``model(inputs)``.

    Args:
        boxes: (D, 4) xyxy in input-image pixels; rows with score <= 0 or class < 0 are padding.
        scores: (D,).
        classes: (D,).
        in_hw: (H, W) of the image given to the graph.
        out_hw: (height, width) of the original image.
    """
    from detectron2.modeling.postprocessing import detector_postprocess
    from detectron2.structures import Boxes, Instances

    # non-finite rows would trip Boxes.clip's assert; dropping them fails the match instead
    keep = (scores > 0) & (classes >= 0) & np.isfinite(boxes).all(axis=1)
    inst = Instances(
        (int(in_hw[0]), int(in_hw[1])),
        pred_boxes=Boxes(torch.from_numpy(boxes[keep].astype(np.float32))),
        scores=torch.from_numpy(scores[keep].astype(np.float32)),
        pred_classes=torch.from_numpy(classes[keep].astype(np.int64)),
    )
    return _as_detections(detector_postprocess(inst, int(out_hw[0]), int(out_hw[1])))


def _as_detections(inst: Any) -> Detections:
    return Detections(
        inst.pred_boxes.tensor.numpy().astype(np.float32),
        inst.scores.numpy().astype(np.float32),
        inst.pred_classes.numpy().astype(np.int64),
    )


class OrtDetector:
    """Runs one exported graph on detectron2 input dicts.

    Args:
        path: ONNX file (e2e or raw).
        threads: intra-op threads.
        cuda: prefer the CUDA execution provider.
    """

    def __init__(self, path: str, threads: Optional[int] = None, cuda: bool = False) -> None:
        self.path = path
        self.session = make_session(path, threads, cuda=cuda)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        """``image`` (1, 3, H, W) float32 -> {output name: array}."""
        return dict(zip(self.output_names, self.session.run(None, {"image": image})))

    def detections(self, inp: Dict[str, Any]) -> Detections:
        """Detections for a detectron2 input dict (``image`` CHW, ``height``, ``width``)."""
        image = as_batch(inp["image"])
        out = self.run(image)
        hw = image.shape[-2:]
        out_hw = (int(inp.get("height", hw[0])), int(inp.get("width", hw[1])))
        return graph_detections(out["boxes"], out["scores"], out["classes"], hw, out_hw)


def as_batch(image: torch.Tensor) -> np.ndarray:
    """CHW tensor (uint8 or float) -> (1, 3, H, W) float32 numpy."""
    return image.float().numpy()[None].copy()


def torch_detections(model: nn.Module, inp: Dict[str, Any]) -> Detections:
    """The reference: the stock detectron2 forward on one input dict."""
    with torch.no_grad():
        return _as_detections(model([inp])[0]["instances"])


def match_detections(
    ref: Detections,
    got: Detections,
    tol: Tolerances,
    score_thresh: float,
    max_det: int,
    image_id: Any,
) -> Tuple[Dict[str, float], List[str]]:
    """Match ``got`` (ONNX) to ``ref`` (PyTorch) without relying on order.

    Each reference detection, best score first, takes the unmatched ONNX detection of the same
    class with the nearest box (L-inf); it matches if box and score are within tolerance.
    Optional (not counted): reference detections under ``score_thresh + score_margin`` and, when
    either side is near ``max_det`` detections, those within ``tol.score`` of the lowest score
    (the truncation may pick another near-tied candidate). Unmatched required ONNX detections
    count as failures too.

    Args:
        ref: PyTorch detections.
        got: ONNX detections.
        tol: tolerances.
        score_thresh: the model's test score threshold.
        max_det: the model's max detections per image.
        image_id: for messages.

    Returns:
        ``{"required", "matched", "max_box_px", "max_score"}`` (maxima over matched pairs) and
        messages describing each failure.
    """
    floor = score_thresh + tol.score_margin
    if max(len(ref.scores), len(got.scores)) >= int(0.9 * max_det):
        lowest = min(np.min(ref.scores, initial=np.inf), np.min(got.scores, initial=np.inf))
        floor = max(floor, float(lowest) + tol.score)
    used = np.zeros(len(got.scores), bool)
    required = matched = 0
    max_box = max_score = 0.0
    fails: List[str] = []
    for i in np.argsort(-ref.scores, kind="stable"):
        is_required = ref.scores[i] >= floor
        required += int(is_required)
        cand = np.flatnonzero((got.classes == ref.classes[i]) & ~used)
        if len(cand) == 0:
            if is_required:
                fails.append(
                    f"image {image_id} det #{i}: field class: no ONNX detection of class "
                    f"{ref.classes[i]} left (torch score {ref.scores[i]:.6f}, box "
                    f"{np.round(ref.boxes[i], 3).tolist()})"
                )
            continue
        linf = np.abs(got.boxes[cand] - ref.boxes[i]).max(axis=1)
        j = cand[int(np.argmin(linf + np.abs(got.scores[cand] - ref.scores[i])))]
        box_d = float(np.abs(got.boxes[j] - ref.boxes[i]).max())
        score_d = float(abs(got.scores[j] - ref.scores[i]))
        if box_d <= tol.box_px and score_d <= tol.score:
            used[j] = True
            matched += int(is_required)
            max_box, max_score = max(max_box, box_d), max(max_score, score_d)
        elif is_required:
            field = "box" if box_d > tol.box_px else "score"
            fails.append(
                f"image {image_id} det #{i} (class {ref.classes[i]}): field {field}: torch box "
                f"{np.round(ref.boxes[i], 4).tolist()} score {ref.scores[i]:.6f} vs ONNX det #{j} "
                f"box {np.round(got.boxes[j], 4).tolist()} score {got.scores[j]:.6f} "
                f"(box L-inf {box_d:.3g} px > {tol.box_px} or |dscore| {score_d:.3g} > {tol.score})"
            )
    for j in np.flatnonzero(~used & (got.scores >= floor)):
        required += 1
        fails.append(
            f"image {image_id} ONNX det #{j}: field class/box: extra detection (class "
            f"{got.classes[j]}, score {got.scores[j]:.6f}, box "
            f"{np.round(got.boxes[j], 3).tolist()}) with no PyTorch counterpart"
        )
    stats = {
        "required": required,
        "matched": matched,
        "max_box_px": max_box,
        "max_score": max_score,
    }
    return stats, fails


def compare_raw(
    ref: Sequence[Dict[str, np.ndarray]],
    got: Sequence[Dict[str, np.ndarray]],
    names: Sequence[str],
    tol: Tolerances,
    labels: Sequence[Any],
) -> Dict[str, Any]:
    """Element-wise check of raw outputs, ``|got - ref| <= atol + rtol * |ref|``.

    Args:
        ref: per image, {output name: PyTorch array}.
        got: per image, {output name: ONNX array}.
        names: outputs to compare.
        tol: tolerances (``raw_rtol``, ``raw_atol``).
        labels: per image, for messages (image id, or ``"<id>/crop"``).

    Returns:
        ``{"max_abs": {name: float}, "passed": bool, "failures": [str]}``.
    """
    max_abs = {n: 0.0 for n in names}
    fails: List[str] = []
    for r, g, label in zip(ref, got, labels):
        for n in names:
            if r[n].shape != g[n].shape:
                fails.append(f"image {label} output {n}: shape {g[n].shape} vs torch {r[n].shape}")
                continue
            diff = np.abs(g[n].astype(np.float64) - r[n])
            max_abs[n] = max(max_abs[n], float(diff.max(initial=0.0)))
            excess = diff - (tol.raw_atol + tol.raw_rtol * np.abs(r[n]))
            if excess.size and excess.max() > 0:
                k = np.unravel_index(int(np.argmax(excess)), excess.shape)
                fails.append(
                    f"image {label} output {n}{list(k)}: ONNX {g[n][k]:.6g} vs torch {r[n][k]:.6g} "
                    f"(|diff| {diff[k]:.3g} > {tol.raw_atol} + {tol.raw_rtol}*|torch|; "
                    f"{int((excess > 0).sum())} elements out of tolerance)"
                )
    return {"max_abs": max_abs, "passed": not fails, "failures": fails}


def evaluate_ap(
    evaluator: Any, inputs: Sequence[Dict[str, Any]], dets: Sequence[Detections]
) -> Dict[str, float]:
    """COCO box AP of ``dets`` on exactly the images of ``inputs``.

    Args:
        evaluator: a fresh detectron2 ``DatasetEvaluator`` (the recipe's COCOEvaluator).
        inputs: detectron2 input dicts (``image_id``, ``height``, ``width``).
        dets: detections per input, original-image pixels.

    Returns:
        The ``bbox`` metrics (AP, AP50, ...; NaN when there are no detections at all).
    """
    from detectron2.structures import Boxes, Instances

    evaluator.reset()
    for inp, d in zip(inputs, dets):
        inst = Instances((int(inp["height"]), int(inp["width"])))
        inst.pred_boxes = Boxes(torch.from_numpy(np.ascontiguousarray(d.boxes, dtype=np.float32)))
        inst.scores = torch.from_numpy(d.scores.astype(np.float32))
        inst.pred_classes = torch.from_numpy(d.classes.astype(np.int64))
        evaluator.process([inp], [{"instances": inst}])
    # pycocotools prints its summary and detectron2 logs a table per call: the caller prints
    # one table for all variants instead
    with contextlib.redirect_stdout(io.StringIO()), _quiet("detectron2.evaluation"):
        try:
            res = evaluator.evaluate(img_ids=[inp["image_id"] for inp in inputs])
        except TypeError:  # evaluators without img_ids
            res = evaluator.evaluate()
    return {k: float(v) for k, v in (res or {}).get("bbox", {}).items() if np.isscalar(v)}


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    log = logging.getLogger(logger_name)
    old = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(old)


def ap_delta(ref: Dict[str, float], got: Dict[str, float]) -> Optional[float]:
    """``got["AP"] - ref["AP"]`` (a NaN/absent side counts as 0); None when both are NaN or
    absent: the evaluation compared nothing, which the gate must not take for a pass."""
    a, b = ref.get("AP", float("nan")), got.get("AP", float("nan"))
    if np.isnan(a) and np.isnan(b):
        return None
    a, b = (0.0 if np.isnan(a) else a), (0.0 if np.isnan(b) else b)
    return float(b - a)


def load_inputs(loader_node: Any, n: int) -> List[Dict[str, Any]]:
    """The first ``n`` (0: all) mapped input dicts of a detectron2 test loader node."""
    from detectron2.config import instantiate

    out: List[Dict[str, Any]] = []
    for batch in instantiate(loader_node):
        out.extend(batch)
        if n and len(out) >= n:
            break
    return out[:n] if n else out


def crop_input(inp: Dict[str, Any]) -> Dict[str, Any]:
    """A 3/4-size crop of an input: a second image size for every comparison."""
    img = inp["image"]
    h, w = img.shape[-2] * 3 // 4, img.shape[-1] * 3 // 4
    return {
        "image": img[:, :h, :w].contiguous(),
        "height": h,
        "width": w,
        "image_id": f"{inp.get('image_id')}/crop",
    }
