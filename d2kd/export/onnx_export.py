"""PyTorch student -> ONNX graphs (the int8 and fp16 variants are :mod:`d2kd.export.quantize`).

What is in each graph (input ``image`` float32 ``(1, 3, H, W)``: the image after the recipe's
test-time resize, in the model's input format, e.g. BGR 0-255; any H and W):

============================  ===============================================================
``student_raw.onnx``          dense detectors only: normalisation, padding to the size
                              divisibility, backbone, FPN, head. Outputs ``cls_logits (1,R,K)``,
                              ``box_deltas (1,R,4)`` (+ ``ctrness (1,R,1)`` for FCOS). For tight
                              tensor checks and for runtimes without NMS.
``student_e2e.onnx``          dense: raw + anchors, top-k decode, class-aware NMS, clip, empty-box
                              filter, padded to ``max_det`` rows (``boxes``, ``scores``,
                              ``classes``; padding rows have score 0 and class -1).
                              R-CNN: normalisation, padding, backbone, FPN, RPN (with its NMS),
                              RoIAlign (``half_pixel``, opset >= 16), box head, per-class NMS;
                              outputs ``boxes (N,4)``, ``classes (N,)``, ``scores (N,)``,
                              ``image_size (2,)`` with N <= max_det.
``student_e2e_int8.onnx``     e2e in int8 (``--int8``; :mod:`d2kd.export.quantize`).
``student_e2e_fp16.onnx``     e2e in float16 with float32 I/O (``--fp16``).
============================  ===============================================================

Not in any graph: the resize (``ResizeShortestEdge``) and the rescale of boxes to the original
image size, which :func:`d2kd.export.parity.graph_detections` does with detectron2's own
``detector_postprocess``. Keeping them out keeps the graphs free of original-size inputs.

Exporters (shared/export-notes.md §0): dense detectors go through the export-friendly
:class:`~d2kd.export.dense_wrapper.DenseExportWrapper` with ``torch.onnx.export(dynamo=True)``,
dynamic H/W, opset 18 (the dynamo exporter's lowest native opset; down-conversion to 17 fails on
``Pad``). Faster R-CNN goes through detectron2's ``TracingAdapter`` with the legacy exporter
(``dynamo=False``) at opset 17: dynamo fails on the RPN's data-dependent branches, and opset 11
(detectron2's ``STABLE_ONNX_OPSET_VERSION``) silently exports RoIAlign without ``aligned=True``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from ..modeling.family import detector_family
from .dense_wrapper import DenseExportWrapper
from .errors import ExportError

__all__ = [
    "ExportedGraph",
    "MIN_OPSET",
    "INPUT_CONTRACT",
    "dynamo_available",
    "export_onnx",
    "keep_outputs",
    "add_metadata",
    "save_model",
]

logger = logging.getLogger(__name__)

MIN_OPSET = 17  # RoiAlign(aligned=True) needs >= 16; everything here is tested at 17/18
DYNAMO_OPSET = 18
LEGACY_OPSET = 17
INPUT_CONTRACT = (
    "image: float32 (1,3,H,W), the test-time resized image (ResizeShortestEdge of the recipe), "
    "model input format, 0-255, unpadded; normalisation and padding are in the graph"
)


@dataclass
class ExportedGraph:
    """One ONNX file written by :func:`export_onnx`."""

    path: str
    kind: str  # "e2e" | "raw" | "e2e_int8" | "e2e_fp16"
    exporter: str  # "dynamo" | "legacy" | derived-from
    opset: int
    output_names: List[str]
    facts: Dict[str, Any] = field(default_factory=dict)


def dynamo_available() -> bool:
    """Whether ``torch.onnx.export(dynamo=True)`` can run (it needs ``onnxscript``)."""
    return importlib.util.find_spec("onnxscript") is not None


def export_onnx(
    model: nn.Module,
    sample: torch.Tensor,
    paths: Dict[str, str],
    exporter: str = "auto",
    opset: Optional[int] = None,
) -> List[ExportedGraph]:
    """Export the student alone; dense detectors get ``raw`` and ``e2e``, R-CNN ``e2e``.

    Args:
        model: the student in eval mode (a stock detectron2 RetinaNet, FCOS or GeneralizedRCNN).
        sample: ``(1, 3, H, W)`` float32 example image; a real test image, so traced branches
            are the ones that produce detections.
        paths: ``{"e2e": path, "raw": path}`` where to write each graph.
        exporter: ``"dynamo"``, ``"legacy"`` or ``"auto"`` (dense: dynamo when onnxscript is
            installed, else legacy; R-CNN: legacy).
        opset: ONNX opset, >= 17; default 18 for dynamo and 17 for legacy.

    Returns:
        The written graphs.

    Raises:
        ExportError: unsupported model class, opset too low, or the exporter failed to trace.
    """
    name = type(model).__name__
    if model.training:
        raise ExportError(f"[export] {name} is in training mode; call .eval() first")
    if opset is not None and opset < MIN_OPSET:
        raise ExportError(
            f"[export] opset {opset} < {MIN_OPSET}: RoIAlign(aligned=True) exports wrongly below "
            "opset 16 (export-notes §0.3); use --opset 17 or higher"
        )
    try:
        dense = detector_family(model, owner="export") == "dense"
    except TypeError as e:
        raise ExportError(
            f"[export] no ONNX export path for {name}: supported are RetinaNet, FCOS (dense "
            "wrapper) and GeneralizedRCNN without masks (TracingAdapter)"
        ) from e
    if exporter == "auto":
        exporter = "dynamo" if dense and dynamo_available() else "legacy"
        if dense and exporter == "legacy":
            logger.warning("[export] onnxscript is not installed: legacy exporter for %s", name)
    if exporter not in ("dynamo", "legacy"):
        raise ExportError(f"[export] exporter must be dynamo, legacy or auto, got {exporter!r}")
    if exporter == "dynamo" and not dynamo_available():
        raise ExportError("[export] the dynamo exporter needs onnxscript (pip install onnxscript)")
    if not dense and exporter == "dynamo":
        raise ExportError(
            f"[export] {name} cannot be exported with dynamo=True (data-dependent branches in the "
            "RPN, export-notes §1.4); use the legacy exporter"
        )
    opset = opset or (DYNAMO_OPSET if exporter == "dynamo" else LEGACY_OPSET)
    with torch.no_grad():
        if dense:
            wrapper = DenseExportWrapper(model, "both").eval()
            example = _dynamo_example(model, sample) if exporter == "dynamo" else sample
            proto = _trace(wrapper, example, wrapper.output_names, exporter, opset, name)
            _check_dynamic_input(proto, example, name)
            skip_low_scores_in_nms(proto, wrapper.nms_score_floor)
            graphs = []
            for kind, names in (
                ("e2e", list(wrapper.E2E_OUTPUTS)),
                ("raw", wrapper.raw_output_names),
            ):
                save_model(keep_outputs(proto, names), paths[kind])
                graphs.append(ExportedGraph(paths[kind], kind, exporter, opset, names))
            return graphs
        names = ["boxes", "classes", "scores", "image_size"]
        proto = _trace(_rcnn_adapter(model, sample), sample, names, exporter, opset, name)
        save_model(proto, paths["e2e"])
        return [ExportedGraph(paths["e2e"], "e2e", exporter, opset, names)]


def _dynamo_example(model: nn.Module, sample: torch.Tensor) -> torch.Tensor:
    """``sample`` tiled up to a size where every feature map is at least 2x2.

    ``torch.export`` specialises a dynamic dimension whose example value makes some size 0 or 1
    (a 128 px image has a 1x1 P7), and the ONNX exporter then silently exports a static graph.
    The dynamo graph has no data-dependent branches, so the pixel content does not matter.
    """
    stride = max(s.stride for s in model.backbone.output_shape().values())
    need = 2 * stride + 1
    h, w = sample.shape[-2:]
    if h >= need and w >= need:
        return sample
    th, tw = max(h, need), max(w, need)
    reps = (1, 1, -(-th // h), -(-tw // w))
    return sample.repeat(*reps)[..., :th, :tw].contiguous()


def _check_dynamic_input(proto: onnx.ModelProto, example: torch.Tensor, name: str) -> None:
    """Fail if the exporter fixed H or W of the input (a silent fallback to static shapes)."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = [i for i in (2, 3) if dims[i].HasField("dim_value")]
    if fixed:
        raise ExportError(
            f"[export] the exporter fixed input dims {fixed} of {name} to "
            f"{[dims[i].dim_value for i in fixed]} (example {tuple(example.shape)}): the graph "
            "would reject other image sizes"
        )


def skip_low_scores_in_nms(proto: onnx.ModelProto, floor: Optional[float]) -> None:
    """Give the graph's NonMaxSuppression a ``score_threshold`` input (in place).

    ``torchvision.ops.nms`` exports without one, so NMS compares every top-k candidate with
    every other, zeroed ones included; the dense wrapper scores those 0 and its padding rows
    above ``floor``, so ignoring scores under ``floor`` changes no output row.
    """
    if floor is None:
        return
    nodes = [n for n in proto.graph.node if n.op_type == "NonMaxSuppression"]
    if len(nodes) != 1 or len(nodes[0].input) not in (4, 5):
        raise ExportError(
            f"[export] expected one NonMaxSuppression with 4 inputs in the dense graph, found "
            f"{[(n.name, len(n.input)) for n in nodes]}"
        )
    name = "nms_score_floor"
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.float32(floor), name))
    if len(nodes[0].input) == 5:
        nodes[0].input[4] = name
    else:
        nodes[0].input.append(name)


def _rcnn_adapter(model: nn.Module, sample: torch.Tensor) -> nn.Module:
    """detectron2 ``TracingAdapter`` around ``model.inference(do_postprocess=False)``."""
    from detectron2.export import TracingAdapter

    if getattr(model.roi_heads, "mask_on", False) or getattr(model.roi_heads, "keypoint_on", False):
        raise ExportError("[export] R-CNN export supports boxes only (mask/keypoint heads are on)")

    def inference(m: nn.Module, image: torch.Tensor):
        return m.inference([{"image": image[0]}], do_postprocess=False)[0]

    # A new nn.Module starts in training mode, and the exporter restores that mode afterwards,
    # which would flip the student back to training: keep the adapter in eval.
    return TracingAdapter(model, (sample,), inference_func=inference).eval()


def _trace(
    module: nn.Module,
    sample: torch.Tensor,
    output_names: List[str],
    exporter: str,
    opset: int,
    model_name: str,
) -> onnx.ModelProto:
    """Run one exporter and return the in-memory ONNX model."""
    try:
        if exporter == "dynamo":
            import torch.fx.experimental._config as fx_config

            dims = {
                2: torch.export.Dim("h", min=32, max=4096),
                3: torch.export.Dim("w", min=32, max=4096),
            }
            # Size-oblivious reasoning: without it torch.export specialises H and W because of
            # stride/contiguity checks that ask whether a feature map dimension can be 1.
            try:
                oblivious = fx_config.patch(backed_size_oblivious=True)
            except (AttributeError, KeyError):  # other torch versions: rely on the final check
                oblivious = contextlib.nullcontext()
            with oblivious, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                prog = torch.onnx.export(
                    module,
                    (sample,),
                    dynamo=True,
                    dynamic_shapes=(dims,),
                    input_names=["image"],
                    output_names=output_names,
                    opset_version=opset,
                    optimize=True,
                    verbose=False,
                )
            return prog.model_proto
        import io

        f = io.BytesIO()
        # dense e2e outputs have a fixed max_det rows; R-CNN's have N <= max_det rows
        dense = isinstance(module, DenseExportWrapper)
        axes: Dict[str, Dict[int, str]] = {"image": {2: "h", 3: "w"}}
        for n in output_names:
            if n in ("boxes", "classes", "scores") and not dense:
                axes[n] = {0: "n"}
            elif n in ("cls_logits", "box_deltas", "ctrness"):
                axes[n] = {1: "r"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (sample,),
                f,
                dynamo=False,
                opset_version=opset,
                input_names=["image"],
                output_names=output_names,
                dynamic_axes=axes,
            )
        return onnx.load_from_string(f.getvalue())
    except ExportError:
        raise
    except Exception as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ExportError(
            f"[export] could not export {model_name} with the {exporter} exporter "
            f"(torch.onnx.export(dynamo={exporter == 'dynamo'}), opset {opset}): "
            f"{type(e).__name__}: {first[:300]}"
        ) from e


def save_model(proto: onnx.ModelProto, path: str) -> None:
    if proto.ByteSize() > 1_800_000_000:
        onnx.save(proto, path, save_as_external_data=True, location=path.split("/")[-1] + ".data")
    else:
        onnx.save(proto, path)


def keep_outputs(proto: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """Copy of ``proto`` with only the graph outputs ``names`` and the nodes they need.

    Args:
        proto: an ONNX model.
        names: graph output names to keep, in order.

    Returns:
        The pruned model (nodes, initializers and value_info no output needs are dropped).
    """
    out = copy.deepcopy(proto)
    g = out.graph
    by_name = {o.name: o for o in g.output}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ExportError(f"[export] graph has no outputs {missing}; has {list(by_name)}")
    kept_outputs = [copy.deepcopy(by_name[n]) for n in names]
    del g.output[:]
    g.output.extend(kept_outputs)
    needed = set(names)
    nodes = []
    for node in reversed(g.node):
        if any(o in needed for o in node.output):
            nodes.append(node)
            needed.update(node.input)
            needed.update(_subgraph_refs(node))
    nodes.reverse()
    kept_nodes = [copy.deepcopy(n) for n in nodes]
    del g.node[:]
    g.node.extend(kept_nodes)
    for container in (g.initializer, g.value_info):
        keep = [copy.deepcopy(x) for x in container if x.name in needed]
        del container[:]
        container.extend(keep)
    return out


def _subgraph_refs(node: onnx.NodeProto) -> set:
    """Names a node's subgraphs (If/Loop bodies) read from the outer scope."""
    refs = set()
    for attr in node.attribute:
        subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for sub in subs:
            for n in sub.node:
                refs.update(n.input)
                refs.update(_subgraph_refs(n))
    return refs


def add_metadata(path: str, meta: Dict[str, Any]) -> None:
    """Store ``meta`` (JSON-encoded values under ``d2kd.<key>``) in the model's metadata_props."""
    proto = onnx.load(path)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key = f"d2kd.{key}"
        entry.value = value if isinstance(value, str) else json.dumps(value)
    save_model(proto, path)
