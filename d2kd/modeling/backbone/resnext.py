"""ResNeXt stages for Detectron2's ResNet (``make_default_stages`` only builds plain ResNets)."""

from typing import List

from detectron2.modeling.backbone.resnet import BottleneckBlock, ResNet

__all__ = ["make_resnext_stages"]


def make_resnext_stages(
    depth: int = 101,
    num_groups: int = 64,
    width_per_group: int = 4,
    norm: str = "FrozenBN",
    stride_in_1x1: bool = False,
) -> List[list]:
    """The four bottleneck stages of ResNeXt-{depth} (e.g. X101-64x4d: 64 groups of width 4).

    The bottleneck width of stage i is ``num_groups * width_per_group * 2**i`` (256 at res2 for
    64x4d), the grouped 3x3 conv carries the stride, as in Detectron2's X101 checkpoints.
    """
    blocks = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
    if depth not in blocks:
        raise ValueError(f"[make_resnext_stages] depth must be one of {list(blocks)}, got {depth}")
    stages, in_ch, width = [], 64, num_groups * width_per_group
    for i, n in enumerate(blocks[depth]):
        out_ch = 256 * 2**i
        stages.append(
            ResNet.make_stage(
                block_class=BottleneckBlock,
                num_blocks=n,
                stride_per_block=[1 if i == 0 else 2] + [1] * (n - 1),
                in_channels=in_ch,
                out_channels=out_ch,
                bottleneck_channels=width * 2**i,
                num_groups=num_groups,
                norm=norm,
                stride_in_1x1=stride_in_1x1,
            )
        )
        in_ch = out_ch
    return stages
