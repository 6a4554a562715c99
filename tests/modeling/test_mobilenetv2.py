"""MobileNetV2 backbone: output names, shapes and strides, its RetinaNet FPN, torchvision keys."""

import os

import pytest
import torch
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.modeling import BACKBONE_REGISTRY
from helpers import ROOT

from d2kd.modeling.backbone import MobileNetV2
from d2kd.modeling.backbone.mobilenetv2 import (
    add_mobilenetv2_config,
    convert_torchvision_mobilenetv2,
)


def test_outputs_shapes_and_strides():
    net = MobileNetV2(out_features=["res2", "res3", "res4", "res5"]).eval()
    out = net(torch.zeros(2, 3, 64, 96))
    shapes = net.output_shape()
    want = {"res2": (24, 4), "res3": (32, 8), "res4": (96, 16), "res5": (1280, 32)}
    for name, (channels, stride) in want.items():
        assert (shapes[name].channels, shapes[name].stride) == (channels, stride)
        assert tuple(out[name].shape) == (2, channels, 64 // stride, 96 // stride), name
    with pytest.raises(ValueError, match="res6"):
        MobileNetV2(out_features=["res6"])


def test_retinanet_fpn_p3_to_p7_from_the_lazy_config():
    cfg = LazyConfig.load(os.path.join(ROOT, "configs", "common", "models", "retinanet_mbv2.py"))
    backbone = instantiate(cfg.model.backbone).eval()
    feats = backbone(torch.zeros(1, 3, 128, 128))
    assert list(feats) == ["p3", "p4", "p5", "p6", "p7"]
    for i, (name, f) in enumerate(feats.items()):
        assert tuple(f.shape) == (1, 256, 128 // 2 ** (3 + i), 128 // 2 ** (3 + i)), name
        assert backbone.output_shape()[name].stride == 2 ** (3 + i)


def test_registered_for_yacs_users():
    cfg = get_cfg()
    add_mobilenetv2_config(cfg)
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    backbone = BACKBONE_REGISTRY.get("build_retinanet_mobilenetv2_fpn_backbone")(cfg, None)
    assert list(backbone.output_shape()) == ["p3", "p4", "p5", "p6", "p7"]


def test_torchvision_weights_load_by_prefix():
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.mobilenet_v2().state_dict()
    net = MobileNetV2(out_features=["res5"])
    converted = convert_torchvision_mobilenetv2(tv, prefix="")
    missing, unexpected = net.load_state_dict(converted, strict=False)
    assert not missing and not unexpected
    assert torch.equal(net.features[0][0].weight, tv["features.0.0.weight"].flip(1))
