"""ONNX export of tiny students and the parity gate, on the synthetic test images.

One real dynamo export of a RetinaNet student is shared by the module; the failure tests replay
its files through a fake exporter (corrupted, or failing half-way), so they cost no export.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from detectron2.config import LazyConfig, instantiate

import d2kd.data  # noqa: F401
from d2kd.export import ExportError, GateFailed, export_student
from d2kd.export import onnx_export as ox
from d2kd.export.dense_wrapper import DenseExportWrapper
from d2kd.export.parity import Detections, Tolerances, load_inputs, match_detections
from d2kd.export.strip import student_node

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RETINANET = str(HERE / "recipe_retinanet_student.py")
RCNN = str(HERE / "recipe_faster_rcnn.py")
FAST = dict(num_parity_images=3, eval_images=4)  # synth_tiny_val has 8 images


def calibrate_heads(model, image, logit_std=1.5, logit_mean=-3.0, delta_std=0.1, delta_mean=0.0):
    """Rescale a random detector's last layers so it has real, untied detections (notes §4.3).

    Random init leaves RetinaNet at the 0.01 prior (no detections) or saturated (ties that
    reorder under float noise); this sets the logits to std ``logit_std`` around ``logit_mean``
    and the box deltas to std ``delta_std`` around ``delta_mean``. One forward pass per group:
    later groups (R-CNN's box head) see the rescaled earlier ones (the RPN).
    """
    if hasattr(model, "head"):
        groups = [[(model.head.cls_score, logit_std, logit_mean),
                   (model.head.bbox_pred, delta_std, delta_mean)]]  # fmt: skip
    else:
        rpn, pred = model.proposal_generator.rpn_head, model.roi_heads.box_predictor
        groups = [[(rpn.objectness_logits, 2.0, 0), (rpn.anchor_deltas, delta_std, 0)],
                  [(pred.cls_score, 2.0, 0), (pred.bbox_pred, delta_std, 0)]]  # fmt: skip
    for group in groups:
        outs = {layer: [] for layer, _, _ in group}
        hooks = [
            layer.register_forward_hook(
                lambda m, i, o: outs[m].append(o.detach().flatten().clone())
            )
            for layer in outs
        ]
        with torch.no_grad():
            model([{"image": image}])
        for h in hooks:
            h.remove()
        for layer, std, mean in group:
            o = torch.cat(outs[layer])
            scale = std / (float(o.std()) or 1.0)
            with torch.no_grad():
                layer.weight *= scale
                layer.bias.copy_((layer.bias - o.mean()) * scale + mean)
    return model


def make_checkpoint(recipe, path):
    """A d2kd-style checkpoint of a calibrated random student, with KD parts and trainer state."""
    cfg = LazyConfig.load(recipe)
    torch.manual_seed(0)
    model = instantiate(student_node(cfg)).eval()
    calibrate_heads(model, load_inputs(cfg.dataloader.test, 1)[0]["image"])
    torch.save(
        {
            "model": model.state_dict(),
            "distill": {"terms.mse.adapters.p3.weight": torch.zeros(8, 8, 1, 1)},
            "trainer": {"iteration": 3, "hooks": {}},
            "iteration": 3,
            "d2kd": {"format": 1, "distiller": True, "student": type(model).__name__},
        },
        path,
    )
    return str(path), model


@pytest.fixture(scope="module")
def retinanet_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retinanet")
    ckpt, model = make_checkpoint(RETINANET, tmp / "model_final.pth")
    out = tmp / "export"
    report = export_student(RETINANET, ckpt, str(out), exporter="dynamo", **FAST)
    return {"ckpt": ckpt, "out": out, "report": report, "model": model}


def test_retinanet_student_passes_the_gate(retinanet_export):
    out, report = retinanet_export["out"], retinanet_export["report"]
    assert sorted(os.listdir(out)) == [
        "report.json", "student_e2e.onnx", "student_model.pth", "student_raw.onnx"
    ]  # fmt: skip
    assert json.loads((out / "report.json").read_text())["status"] == "passed"
    fp32 = report["variants"]["fp32"]
    assert fp32["exporter"] == "dynamo" and fp32["graphs"]["e2e"]["opset"] >= 17
    assert "NonMaxSuppression" in fp32["graphs"]["e2e"]["ops"]
    nms = next(n for n in onnx.load(str(out / "student_e2e.onnx")).graph.node
               if n.op_type == "NonMaxSuppression")  # fmt: skip
    assert len(nms.input) == 5  # a score threshold: NMS skips the zeroed top-k candidates
    det = fp32["detections"]
    assert det["required"] > 100 and det["matched"] == det["required"]  # real detections
    assert det["max_box_px"] <= 1e-2 and det["max_score"] <= 1e-4
    assert fp32["raw"]["passed"] and max(fp32["raw"]["max_abs"].values()) < 1e-4
    assert abs(fp32["delta_ap"]) <= 0.1
    # H and W stay dynamic, metadata records provenance
    proto = onnx.load(str(out / "student_e2e.onnx"), load_external_data=False)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_param and dims[3].dim_param
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["d2kd.thing_classes"])[:1] and meta["d2kd.exporter"] == "dynamo"


def test_dense_wrapper_equals_the_stock_forward(retinanet_export):
    """In PyTorch, the export-friendly decode + NMS gives detectron2's detections exactly."""
    model = retinanet_export["model"]
    wrapper = DenseExportWrapper(model, "e2e").eval()
    for hw in [(100, 150)]:  # the fixture's parity covers 128 x 128
        image = torch.rand(3, *hw) * 255
        with torch.no_grad():
            inst = model([{"image": image}])[0]["instances"]
            boxes, scores, classes = wrapper(image[None])
        n = len(inst)
        assert n > 0 and boxes.shape == (model.max_detections_per_image, 4)
        assert torch.equal(classes[:n], inst.pred_classes) and torch.equal(scores[:n], inst.scores)
        assert torch.allclose(boxes[:n], inst.pred_boxes.tensor, atol=1e-4)
        assert (scores[n:] == 0).all() and (classes[n:] == -1).all()


def test_dense_wrapper_equals_the_stock_forward_for_fcos():
    from detectron2.model_zoo import get_config

    from recipe_base import NUM_CLASSES, tiny_retinanet  # noqa: F401  (sys.path: rootdir)

    node = get_config("common/models/fcos.py").model
    small = tiny_retinanet()
    node.backbone.bottom_up = small.backbone.bottom_up
    node.backbone.out_channels = 64
    node.backbone.top_block.in_channels = 64
    node.head.input_shape = small.head.input_shape
    node.head.conv_dims = [64]
    node.num_classes = NUM_CLASSES
    node.test_score_thresh = 0.05
    torch.manual_seed(0)
    image = torch.rand(3, 64, 96) * 255
    # FCOS regresses (l, t, r, b) distances in strides: positive, or every box is empty
    model = calibrate_heads(instantiate(node).eval(), image, delta_mean=1.0)
    with torch.no_grad():
        inst = model([{"image": image}])[0]["instances"]
        boxes, scores, classes = DenseExportWrapper(model, "e2e").eval()(image[None])
    keep = scores > 0
    assert len(inst) > 0 and int(keep.sum()) == len(inst)
    assert torch.equal(classes[keep], inst.pred_classes)
    assert torch.allclose(scores[keep], inst.scores) and torch.allclose(
        boxes[keep], inst.pred_boxes.tensor, atol=1e-4
    )


def test_legacy_exporter_fallback_for_dense_detectors(retinanet_export, tmp_path):
    """Without onnxscript, dense detectors export with the legacy tracer; sizes stay dynamic."""
    from d2kd.export.parity import OrtDetector, torch_detections

    model = retinanet_export["model"]
    paths = {"e2e": str(tmp_path / "e2e.onnx"), "raw": str(tmp_path / "raw.onnx")}
    graphs = ox.export_onnx(model, torch.rand(1, 3, 128, 128) * 255, paths, exporter="legacy")
    assert [(g.kind, g.exporter, g.opset) for g in graphs] == [
        ("e2e", "legacy", 17), ("raw", "legacy", 17)
    ]  # fmt: skip
    inp = {"image": torch.rand(3, 96, 160) * 255, "height": 96, "width": 160}  # another size
    stats, fails = match_detections(
        torch_detections(model, inp), OrtDetector(paths["e2e"]).detections(inp), Tolerances(),
        model.test_score_thresh, model.max_detections_per_image, "random",
    )  # fmt: skip
    assert stats["required"] > 0 and stats["matched"] == stats["required"], fails[:3]


def _replay(files, corrupt=None, fail_after_write=False):
    """A stand-in for export_onnx that copies already exported graphs into the staging folder."""

    def fake(model, sample, paths, exporter="auto", opset=None):
        graphs = []
        for kind in ("e2e", "raw"):
            shutil.copy(files / f"student_{kind}.onnx", paths[kind])
            graphs.append(ox.ExportedGraph(paths[kind], kind, "dynamo", 18, []))
        if corrupt:
            proto = onnx.load(paths["e2e"])
            init = next(t for t in proto.graph.initializer if t.name == corrupt)
            arr = onnx.numpy_helper.to_array(init) * 1.5
            init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
            onnx.save(proto, paths["e2e"])
        if fail_after_write:
            raise ExportError("[export] simulated crash after the graphs were written")
        return graphs

    return fake


def _head_conv_name(path):
    proto = onnx.load(str(path))
    return next(t.name for t in proto.graph.initializer if "cls_subnet" in t.name and t.dims[0] > 1)


def test_gate_fails_on_a_corrupted_graph_and_publishes_nothing(
    retinanet_export, monkeypatch, tmp_path
):
    files = retinanet_export["out"]
    name = _head_conv_name(files / "student_e2e.onnx")
    monkeypatch.setattr(ox, "export_onnx", _replay(files, corrupt=name))
    out = tmp_path / "out"
    with pytest.raises(
        GateFailed, match=r"(?s)parity gate failed.*image \d+ det #\d+.*field (box|score|class)"
    ):
        export_student(
            RETINANET, retinanet_export["ckpt"], str(out), num_parity_images=1, eval_images=1
        )
    assert sorted(os.listdir(out)) == ["report.failed.json"]
    failed = json.loads((out / "report.failed.json").read_text())
    assert failed["status"] == "failed" and failed["variants"]["fp32"]["passed"] is False
    assert failed["variants"]["fp32"]["raw"]["passed"]  # only the e2e graph was corrupted


def test_failure_mid_way_leaves_no_onnx_and_removes_stale_ones(
    retinanet_export, monkeypatch, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "student_e2e.onnx").write_text("an older export")
    monkeypatch.setattr(ox, "export_onnx", _replay(retinanet_export["out"], fail_after_write=True))
    with pytest.raises(ExportError, match="simulated crash"):
        export_student(
            RETINANET, retinanet_export["ckpt"], str(out), num_parity_images=1, eval_images=1
        )
    assert sorted(os.listdir(out)) == ["report.failed.json"]  # no .onnx, no staging folder


def test_opset_below_17_and_unknown_models_are_rejected(retinanet_export):
    model = retinanet_export["model"]
    with pytest.raises(ExportError, match="opset 11 < 17"):
        ox.export_onnx(model, torch.zeros(1, 3, 64, 64), {}, opset=11)
    with pytest.raises(ExportError, match="no ONNX export path for Linear"):
        ox.export_onnx(torch.nn.Linear(2, 2).eval(), torch.zeros(1, 3, 64, 64), {})


def test_a_trace_failure_names_the_model_class_and_exporter(retinanet_export, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("GuardOnDataDependentSymNode: Eq(u0, 1)")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match=r"could not export RetinaNet with the legacy exporter"):
        ox.export_onnx(retinanet_export["model"], torch.zeros(1, 3, 64, 64), {}, exporter="legacy")


def test_legacy_exporter_still_exists(tmp_path):
    """The R-CNN path needs torch.onnx.export(dynamo=False); fail loudly when torch drops it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.zeros(1, 3, 8, 8),),
                          str(tmp_path / "c.onnx"), dynamo=False, opset_version=17)  # fmt: skip
    onnx.checker.check_model(str(tmp_path / "c.onnx"))


def test_matching_is_order_insensitive_and_names_the_field():
    b = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4]], np.float32)
    ref = Detections(b, np.array([0.9, 0.8, 0.7], np.float32), np.array([1, 1, 2]))
    perm = [2, 0, 1]
    got = Detections(b[perm] + 1e-4, ref.scores[perm], ref.classes[perm])
    stats, fails = match_detections(ref, got, Tolerances(), 0.05, 100, "img")
    assert stats["matched"] == stats["required"] == 3 and not fails
    bad = Detections(got.boxes.copy(), got.scores.copy(), got.classes.copy())
    bad.boxes[1, 0] += 0.5
    stats, fails = match_detections(ref, bad, Tolerances(), 0.05, 100, "img")
    assert stats["matched"] == 2 and "image img det #0 (class 1): field box" in fails[0]


def test_cli_exports_a_faster_rcnn_student_with_int8(tmp_path):
    ckpt, _ = make_checkpoint(RCNN, tmp_path / "rcnn.pth")
    out = tmp_path / "export"
    cmd = [sys.executable, str(ROOT / "tools" / "export_student.py"), "--config-file", RCNN,
           "--checkpoint", ckpt, "--output", str(out), "--int8", "--calibration-images", "2",
           "--num-parity-images", "2", "--eval-images", "3"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GeneralizedRCNN exported" in proc.stdout
    # int8 detections are not matched against fp32 tolerances: the line says so and gives ΔAP
    int8_line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("int8:"))
    assert "detections not gated" in int8_line and "ΔAP " in int8_line
    assert "matched" not in int8_line and "box diff" not in int8_line
    # one AP table for torch, fp32 and int8; no per-evaluation COCOeval summaries
    assert proc.stdout.count("COCO box AP") == 1 and "Average Precision" not in proc.stdout
    assert [ln.split("|")[0].strip() for ln in proc.stdout.splitlines()[-3:]] == [
        "torch", "fp32", "int8"
    ]  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    fp32 = report["variants"]["fp32"]
    assert fp32["exporter"] == "legacy" and fp32["opset"] == 17
    assert fp32["graphs"]["e2e"]["ops"].get("RoiAlign", 0) >= 1
    assert fp32["detections"]["matched"] == fp32["detections"]["required"] > 0
    int8 = report["variants"]["int8"]
    assert int8["detections"]["gated"] is False and int8["delta_ap"] is not None
    assert (out / "student_e2e_int8.onnx").exists() and not (out / "student_raw.onnx").exists()


def test_a_gate_that_compared_nothing_fails(retinanet_export, tmp_path):
    """A model with no detections must not pass with 0/0 matched and AP NaN on both sides."""
    out = tmp_path / "out"
    with pytest.raises(GateFailed) as info:
        export_student(
            RETINANET, retinanet_export["ckpt"], str(out), exporter="legacy",
            num_parity_images=2, eval_images=2, opts=["+model.student.test_score_thresh=1.01"],
        )  # fmt: skip
    msg = str(info.value)
    assert "fp32: nothing was compared" in msg and "0/0 matched" in msg
    assert "fp32: AP compared nothing" in msg and "neither produced a detection" in msg
    assert sorted(os.listdir(out)) == ["report.failed.json"]
    fp32 = json.loads((out / "report.failed.json").read_text())["variants"]["fp32"]
    assert fp32["passed"] is False and fp32["detections"]["required"] == 0
    assert fp32["delta_ap"] is None and fp32["raw"]["passed"]  # the raw tensors did match


def test_summary_says_int8_is_not_gated_and_prints_ap_once():
    cli = _load_cli()
    ap = {"AP": 30.0, "AP50": 50.0, "AP75": 31.0, "APs": 10.0, "APm": 30.0, "APl": float("nan")}
    report = {
        "model": "RetinaNet", "status": "passed", "images": {"eval": 4}, "ap_torch": ap,
        "variants": {
            "fp32": {"files": {"e2e": "student_e2e.onnx"}, "ap": ap, "delta_ap": 0.0,
                     "max_abs_delta_ap": 0.1, "detections": {"gated": True, "required": 5,
                     "matched": 5, "max_box_px": 1e-5, "max_score": 1e-6}},
            "int8": {"files": {"e2e": "student_e2e_int8.onnx"}, "ap": dict(ap, AP=29.7),
                     "delta_ap": -0.3, "max_abs_delta_ap": 1.0, "detections": {"gated": False}},
        },
    }  # fmt: skip
    text = cli.summary(report, "out")
    int8 = next(ln for ln in text.splitlines() if ln.strip().startswith("int8:"))
    assert "detections not gated" in int8 and "ΔAP -0.300 (bound ±1.0)" in int8
    assert "matched 5/5" in text and text.count("COCO box AP") == 1
    assert text.splitlines()[-1].split("|")[:2] == ["    int8    ", " 29.70 "]


def _load_cli():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "export_student_cli", ROOT / "tools" / "export_student.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def test_int8_runs_every_convolution_in_int8_and_keeps_decode_fp32(retinanet_export, tmp_path):
    """S8S8 activations with only Conv quantized left onnxruntime running every Conv followed by
    a Relu in fp32 (half of a ResNet's); U8S8 over the network's ops fuses them all, and no Q/DQ
    enters the decode or NMS."""
    from d2kd.export.quantize import CONVNET_OPS, quantize_int8

    cfg = LazyConfig.load(RETINANET)
    calib = [x["image"].float().numpy()[None] for x in load_inputs(cfg.dataloader.test, 2)]
    dst = str(tmp_path / "int8.onnx")
    facts = quantize_int8(str(retinanet_export["out"] / "student_e2e.onnx"), dst, calib)
    assert facts["fp32_convs"] == 0 and facts["activations"] == "uint8"
    proto = onnx.load(dst)
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    fed_by = {
        producer.get(n.input[0], "input") for n in proto.graph.node if n.op_type == "QuantizeLinear"
    }
    assert fed_by <= set(CONVNET_OPS) | {"Pad"}, fed_by  # no Q after sigmoid, top-k, decode
