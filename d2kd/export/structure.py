"""Structural checks of a written ONNX graph, before any number is compared.

They catch what no tensor comparison on a few images would: an opset that exports RoIAlign
wrongly, a graph without its NMS, and a teacher (or any other module) exported with the student,
which shows as more weight bytes than the student has parameters.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable

import onnx
from torch import nn

from .errors import ExportError
from .onnx_export import MIN_OPSET, ExportedGraph

__all__ = ["check_graph", "all_nodes"]


def all_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                yield from all_nodes(sub)


def _constant_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of weights: initializers plus tensors inside Constant nodes, subgraphs included."""
    total = sum(
        len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer
    )
    for node in all_nodes(proto.graph):
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    total += onnx.numpy_helper.to_array(a.t).nbytes
    return total


def check_graph(graph: ExportedGraph, model: nn.Module) -> Dict[str, Any]:
    """Structural checks of one written graph; raise :class:`ExportError` on any failure.

    Checks ``onnx.checker.check_model(full_check=True)``, the opset, that an e2e graph contains
    ``NonMaxSuppression`` (subgraphs included), that R-CNN's RoiAlign uses ``half_pixel`` when
    the pooler is ``aligned``, and that the weights are at most 1.1x the student's fp32 parameter
    bytes (+1 MiB), which a teacher leaking into the graph would exceed.

    Args:
        graph: the file to check.
        model: the student it was exported from.

    Returns:
        Facts for the report: opset, op counts, weight bytes, node count.
    """
    path = graph.path
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:
        raise ExportError(f"[export] onnx.checker rejected {path}: {e}") from e
    proto = onnx.load(path)
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise ExportError(f"[export] {path} has opset {opset} < {MIN_OPSET}")
    ops: Dict[str, int] = {}
    for node in all_nodes(proto.graph):
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    if graph.kind == "e2e" and "NonMaxSuppression" not in ops:
        raise ExportError(f"[export] {path}: e2e graph has no NonMaxSuppression node")
    if "RoiAlign" in ops:
        aligned = any(getattr(m, "aligned", False) for m in model.modules())
        for node in all_nodes(proto.graph):
            if node.op_type != "RoiAlign":
                continue
            mode = next(
                (
                    a.s.decode()
                    for a in node.attribute
                    if a.name == "coordinate_transformation_mode"
                ),
                "half_pixel",
            )
            if aligned and mode != "half_pixel":
                raise ExportError(
                    f"[export] {path}: RoiAlign {node.name} mode {mode}, expected half_pixel"
                )
    n_params = sum(p.numel() for p in model.parameters())
    weight_bytes = _constant_bytes(proto)
    limit = int(1.1 * 4 * n_params) + (1 << 20)
    if graph.kind in ("e2e", "raw") and weight_bytes > limit:
        raise ExportError(
            f"[export] {path} holds {weight_bytes / 2**20:.1f} MiB of weights, more than 1.1x the "
            f"student's {n_params} fp32 parameters: something other than the student was exported"
        )
    return {
        "opset": opset,
        "nodes": len(proto.graph.node),
        "weight_bytes": weight_bytes,
        "student_params": n_params,
        "ops": dict(sorted(ops.items())),
    }
