"""MobileNetV2 as a Detectron2 backbone, and its FPN (P3-P7) for RetinaNet students (HEAD).

Module names follow torchvision's ``mobilenet_v2().features`` (``features.<i>...``), so
ImageNet weights load after :func:`convert_torchvision_mobilenetv2` prefixes the keys. The
four outputs are those of mmdet's ``MobileNetV2(out_indices=(1, 2, 4, 7))`` that HEAD's FPN
reads: 24, 32, 96 and 1280 channels at strides 4, 8, 16 and 32, named res2..res5 so the
ResNet FPN recipes (``in_features=["res3", "res4", "res5"]``, P6/P7 on "res5") apply unchanged.
"""

from typing import Dict, List, Optional, Sequence

from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from torch import Tensor, nn

__all__ = [
    "MobileNetV2",
    "build_mobilenetv2_backbone",
    "build_retinanet_mobilenetv2_fpn_backbone",
    "add_mobilenetv2_config",
    "convert_torchvision_mobilenetv2",
]

# (expansion t, output channels c, repeats n, first stride s): the MobileNetV2 paper's table 2.
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2)]
_SETTINGS += [(6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
# Index of the last ``features`` block of each output (torchvision numbering).
_OUTPUTS = {"res2": 3, "res3": 6, "res4": 13, "res5": 18}
_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
_CHANNELS = {"res2": 24, "res3": 32, "res4": 96, "res5": 1280}


def _activation(name: str) -> nn.Module:
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "leaky_relu":  # HEAD's mmdet config: LeakyReLU(0.1)
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"[MobileNetV2] activation must be relu6, leaky_relu or relu, got {name!r}")


def _conv_norm_act(cin: int, cout: int, k: int, stride: int, groups: int, norm: str, act: str):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        get_norm(norm, cout),
        _activation(act),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1, linear); residual when shapes agree."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, norm: str, act: str):
        super().__init__()
        hidden = cin * expand
        layers: List[nn.Module] = []
        if expand != 1:
            layers.append(_conv_norm_act(cin, hidden, 1, 1, 1, norm, act))
        layers += [
            _conv_norm_act(hidden, hidden, 3, stride, hidden, norm, act),
            nn.Conv2d(hidden, cout, 1, bias=False),
            get_norm(norm, cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(Backbone):
    """MobileNetV2 (width 1.0) returning res2..res5 (24/32/96/1280 channels, strides 4-32).

    Args:
        out_features: which of res2..res5 to return.
        norm: Detectron2 norm name ("BN", "SyncBN", "FrozenBN", ...).
        activation: "relu6" (torchvision, the paper) or "leaky_relu" (0.1, HEAD's mmdet config).
        freeze_at: freeze the first ``freeze_at`` features blocks (0: train everything, as
            mmdet's default ``frozen_stages=-1``).
    """

    def __init__(
        self,
        out_features: Sequence[str] = ("res3", "res4", "res5"),
        norm: str = "BN",
        activation: str = "relu6",
        freeze_at: int = 0,
    ):
        super().__init__()
        unknown = [f for f in out_features if f not in _OUTPUTS]
        if unknown:
            raise ValueError(
                f"[MobileNetV2] unknown out_features {unknown}; available: {list(_OUTPUTS)}"
            )
        blocks: List[nn.Module] = [_conv_norm_act(3, 32, 3, 2, 1, norm, activation)]
        cin = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t, norm, activation))
                cin = c
        blocks.append(_conv_norm_act(cin, 1280, 1, 1, 1, norm, activation))
        self.features = nn.Sequential(*blocks)
        self._out_features = list(out_features)
        self._out_feature_channels = {k: _CHANNELS[k] for k in self._out_features}
        self._out_feature_strides = {k: _STRIDES[k] for k in self._out_features}
        self._taps = {_OUTPUTS[k]: k for k in self._out_features}
        self._last = max(self._taps)
        self._init_weights()
        for block in list(self.features)[:freeze_at]:
            for p in block.parameters():
                p.requires_grad_(False)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        if x.dim() != 4:
            raise ValueError(f"[MobileNetV2] expects (N, C, H, W) input, got {tuple(x.shape)}")
        out = {}
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self._taps:
                out[self._taps[i]] = x
            if i == self._last:
                break
        return out


def convert_torchvision_mobilenetv2(
    state_dict: Dict[str, Tensor], prefix: str = "backbone.bottom_up.", bgr: bool = True
) -> Dict[str, Tensor]:
    """Map torchvision ``mobilenet_v2`` ImageNet weights onto a Detectron2 model's keys.

    Keeps ``features.*`` (the classifier is dropped) and prepends ``prefix``. With ``bgr`` the
    stem's input channels are reversed, since Detectron2 feeds BGR images (the teacher and the
    student share the loader); use the torchvision std in BGR order, (57.375, 57.12, 58.395).
    Save the result as ``{"model": ...}`` and pass it as ``train.init_checkpoint``.
    """
    out = {prefix + k: v for k, v in state_dict.items() if k.startswith("features.")}
    stem = prefix + "features.0.0.weight"
    if bgr and stem in out:
        out[stem] = out[stem].flip(1)
    return out


def add_mobilenetv2_config(cfg) -> None:
    """Add ``MODEL.MOBILENETV2`` (NORM, ACTIVATION, OUT_FEATURES) to a yacs config."""
    from detectron2.config import CfgNode as CN

    cfg.MODEL.MOBILENETV2 = CN()
    cfg.MODEL.MOBILENETV2.NORM = "BN"
    cfg.MODEL.MOBILENETV2.ACTIVATION = "relu6"
    cfg.MODEL.MOBILENETV2.OUT_FEATURES = ["res3", "res4", "res5"]


@BACKBONE_REGISTRY.register()
def build_mobilenetv2_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> MobileNetV2:
    """yacs builder (after :func:`add_mobilenetv2_config`); MODEL.BACKBONE.FREEZE_AT applies."""
    if input_shape is not None and input_shape.channels not in (None, 3):
        raise ValueError(f"[MobileNetV2] expects 3 input channels, got {input_shape.channels}")
    m = cfg.MODEL.MOBILENETV2
    return MobileNetV2(m.OUT_FEATURES, m.NORM, m.ACTIVATION, cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_retinanet_mobilenetv2_fpn_backbone(cfg, input_shape: Optional[ShapeSpec] = None):
    """yacs builder of MobileNetV2 + FPN with P6/P7 on res5 (RetinaNet's P3-P7)."""
    bottom_up = build_mobilenetv2_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(_CHANNELS["res5"], out_channels, in_feature="res5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
