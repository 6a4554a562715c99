"""Reduced-precision variants of an exported graph: static int8 for CPUs, fp16 for GPUs.

int8 is worth its accuracy cost only if onnxruntime runs the convolutions in int8: an int8
graph in which half of them stay fp32 behind Q/DQ pairs is barely faster than fp32.
:func:`quantize_int8` reports how many convolutions onnxruntime leaves in fp32.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import onnx

from .errors import ExportError
from .onnx_export import save_model

__all__ = ["calibration_images", "quantize_int8", "convert_fp16"]

logger = logging.getLogger(__name__)


def calibration_images(cfg: Any, n: int, fallback: List[Dict[str, Any]]) -> tuple:
    """``n`` train images through the test mapper (int8 calibration); test images otherwise."""
    from detectron2.config import instantiate
    from detectron2.data import get_detection_dataset_dicts

    try:
        names = cfg.dataloader.train.dataset.names
        dicts = get_detection_dataset_dicts(names, filter_empty=False)
        step = max(1, len(dicts) // n)
        mapper = instantiate(cfg.dataloader.test.mapper)
        imgs = [mapper(copy.deepcopy(d))["image"] for d in dicts[::step][:n]]
        source = f"train set {names}"
    except Exception as e:  # a recipe without a named train dataset
        logger.warning("[export] no train images for calibration (%s); using test images", e)
        imgs, source = [x["image"] for x in fallback[:n]], "test set (no train dataset found)"
    return [x.float().numpy()[None].copy() for x in imgs], source


#: Operators quantized (with their node names restricted to the network, see convnet_nodes).
#: Besides Conv/Gemm/MatMul, Relu, Add, MaxPool and Resize keep a residual block or an FPN level
#: in int8 from one convolution to the next: left in fp32, each sat between a Q and a DQ, and
#: onnxruntime then kept half the convolutions of a ResNet-18 in fp32 (all those followed by a
#: Relu) and ran a DQ/Q pair per tensor.
CONVNET_OPS = ("Conv", "Gemm", "MatMul", "Relu", "Clip", "Add", "MaxPool", "Resize", "Concat")


def convnet_nodes(proto: onnx.ModelProto) -> List[str]:
    """Names of the Conv/Gemm/MatMul nodes and of the :data:`CONVNET_OPS` nodes between them.

    Walks up from every Conv/Gemm/MatMul through producers of the ops in :data:`CONVNET_OPS`
    only, so input normalisation, RoIAlign and everything after the last layers (reshape,
    sigmoid, top-k, box decode, NMS) stay fp32: quantizing them adds Q/DQ pairs for no speed and
    puts int8 rounding into box coordinates.
    """
    prod = {o: n for n in proto.graph.node for o in n.output}
    stack = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    keep: Dict[str, onnx.NodeProto] = {}
    while stack:
        node = stack.pop()
        if node.name in keep:
            continue
        keep[node.name] = node
        for name in node.input:
            up = prod.get(name)
            if up is not None and up.op_type in CONVNET_OPS:
                stack.append(up)
    return sorted(keep)


def quantize_int8(
    src: str,
    dst: str,
    calibration: Sequence[np.ndarray],
    per_channel: bool = True,
    reduce_range: Optional[bool] = None,
) -> Dict[str, Any]:
    """Static QDQ int8 of the network (uint8 activations, int8 per-channel weights).

    Why these choices (profiled with onnxruntime's profiler on the quickstart RetinaNet R18 at
    1 thread on an AVX-512 VNNI CPU; the export report of issue 18 has the numbers):

    * uint8 activations (U8S8): with int8 activations (S8S8) onnxruntime's fusion left every
      Conv followed by a Relu in fp32 behind DQ/Q pairs, and in QOperator format its s8s8
      QLinearConv ran several times slower than fp32. U8S8 is the x86 kernels' native form.
    * QDQ format, with :data:`CONVNET_OPS` quantized inside the network only
      (:func:`convnet_nodes`): every Conv fuses into a QLinearConv and residual Adds into
      QLinearAdd; decode and NMS stay fp32.
    * ``reduce_range`` (7-bit weights) by default only on CPUs without VNNI, where u8 x s8 dot
      products can saturate (onnxruntime's quantization docs).

    Args:
        src: fp32 ONNX path.
        dst: output path.
        calibration: ``(1, 3, H, W)`` float32 images (sizes may differ).
        per_channel: per-channel weight scales.
        reduce_range: 7-bit weights; None: when this CPU has no VNNI.

    Returns:
        Facts for the report: formats, quantized and fp32 node counts, the op types
        onnxruntime still runs in fp32 convolutions (``fp32_convs``, 0 when all fused).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from ..utils.hardware import cpu_flags

    if not calibration:
        raise ExportError("[export] int8 needs at least one calibration image")
    if reduce_range is None:
        flags = cpu_flags()
        reduce_range = not any(flags.get(f) for f in ("avx512_vnni", "avx_vnni", "amx_int8"))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            x = next(self.it, None)
            return None if x is None else {"image": x}

    pre = dst + ".pre.onnx"
    model_input, preprocessed = src, False
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(src, pre, skip_symbolic_shape=True)
        model_input, preprocessed = pre, True
    except Exception as e:  # preprocessing is an optimisation; quantize the original instead
        logger.warning("[export] quant_pre_process failed on %s (%s); quantizing as is", src, e)
    try:
        proto = onnx.load(model_input)
        nodes = convnet_nodes(proto)
        quantize_static(
            model_input,
            dst,
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            op_types_to_quantize=list(CONVNET_OPS),
            nodes_to_quantize=nodes,
        )
    except Exception as e:
        raise ExportError(f"[export] int8 quantization of {src} failed: {e}") from e
    finally:
        if os.path.exists(pre):
            os.unlink(pre)
    return {
        "calibration_images": len(calibration),
        "quant_pre_process": preprocessed,
        "format": "QDQ",
        "activations": "uint8",
        "weights": "int8 per-channel" if per_channel else "int8 per-tensor",
        "reduce_range": reduce_range,
        "quantized_nodes": len(nodes),
        "fp32_nodes": len(proto.graph.node) - len(nodes),
        "fp32_convs": fused_fp32_convs(dst),
    }


def fused_fp32_convs(path: str) -> int:
    """Convolutions onnxruntime (all CPU optimisations) still runs in fp32 in an int8 graph."""
    import onnxruntime as ort

    opt = path + ".opt.onnx"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = opt
    so.log_severity_level = 3
    try:
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        fused = onnx.load(opt)
    finally:
        if os.path.exists(opt):
            os.unlink(opt)
    return sum(1 for n in fused.graph.node if n.op_type in ("Conv", "FusedConv"))


def convert_fp16(src: str, dst: str) -> Dict[str, Any]:
    """float16 weights and activations with float32 inputs/outputs (onnxconverter-common).

    NMS, TopK, RoiAlign and the box decode inputs stay float32 (``op_block_list``).

    Raises:
        ExportError: when onnxconverter-common is not installed (the caller reports a skip).
    """
    try:
        from onnxconverter_common import float16
    except ImportError as e:
        raise ExportError("[export] --fp16 needs onnxconverter-common (pip install it)") from e
    block = ["NonMaxSuppression", "TopK", "RoiAlign", "Exp", "Range", "Resize"]
    proto = float16.convert_float_to_float16(
        onnx.load(src), keep_io_types=True, op_block_list=block + float16.DEFAULT_OP_BLOCK_LIST
    )
    save_model(proto, dst)
    return {"op_block_list": block}
