# Teacher and student detectors for the embedded synthetic dataset (128 px images, objects of
# 6-40 px), trained from scratch: there are no pretrained weights here, so every norm is BN.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone import ResNet

from d2kd.data import SYNTHETIC_CLASSES


def retinanet_synth(
    depth: int,
    fpn_channels: int,
    head_convs: int,
    head_norm: str = "BN",
    match_thresholds=(0.3, 0.4),
):
    """A stock Detectron2 RetinaNet node for 128 px synthetic images, trained from scratch.

    Args:
        depth: ResNet depth (18/34 use BasicBlock, 50+ Bottleneck).
        fpn_channels: FPN and head width.
        head_convs: convolutions in each head tower.
        head_norm: norm of the head towers ("" for none, as before the teacher ablation).
        match_thresholds: the anchor matcher's background / foreground IoU thresholds.
    """
    model = get_config("common/models/retinanet.py").model
    model.num_classes = len(SYNTHETIC_CLASSES)
    model.backbone.bottom_up.stem.norm = "BN"
    if depth < 50:
        model.backbone.bottom_up.stages = L(ResNet.make_default_stages)(depth=depth, norm="BN")
        model.backbone.top_block.in_channels = 512
    else:
        model.backbone.bottom_up.stages.depth = depth
        model.backbone.bottom_up.stages.norm = "BN"
    model.backbone.norm = "BN"  # from scratch: normalise the FPN too (a stock FPN option)
    model.backbone.out_channels = fpn_channels
    model.head.input_shape = [ShapeSpec(channels=fpn_channels)] * 5
    model.head.conv_dims = [fpn_channels] * head_convs
    # The two changes benchmarks/teacher_ablation.py found (benchmarks/README.md, "Why the
    # RetinaNet teacher failed"): BN in the head towers (one BN per level; a head trained from
    # scratch without a norm barely learned), and IoU thresholds 0.3 / 0.4 so that tiny objects
    # get several positive anchors (at 0.4 / 0.5, 43% of synth_val's boxes had no anchor with
    # IoU >= 0.5).
    # BN needs at least 2 images per process: P7 is 1x1 at 128 px (with --num-gpus N, keep
    # dataloader.train.total_batch_size >= 2N, or pass model.head.norm=GN).
    model.head.norm = head_norm
    model.anchor_matcher.thresholds = list(match_thresholds)
    # Anchors of 8..128 px on strides 8..128: objects here are 6-40 px; COCO's 32..512 miss them.
    model.anchor_generator.sizes = [
        [s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)] for s in (8, 16, 32, 64, 128)
    ]
    return model


# Teacher: ResNet-18, 256-channel FPN, the standard 4 x 256 head (0.68 s/step at batch 8 on
# 2 CPU cores without the head's BN, shared/measurements.md). An R50 teacher trained from scratch on a CPU-sized
# schedule ended below the student (see retinanet_R18w_teacher.py); `retinanet_synth(depth=50,
# fpn_channels=256, head_convs=4)` builds it for those with a longer budget or a GPU.
teacher_model = retinanet_synth(depth=18, fpn_channels=256, head_convs=4)

# Student: ResNet-18, 128-channel FPN, a light 2 x 128 head (0.37 s/step at batch 8 on 2 CPU
# cores against 0.95 s for the teacher without the head's BN, shared/measurements.md).
student_model = retinanet_synth(depth=18, fpn_channels=128, head_convs=2)


def faster_rcnn_synth(depth: int, fpn_channels: int = 256, fc_dim: int = 1024):
    """A stock Detectron2 Faster R-CNN (FPN P2-P6) node for 128 px synthetic images, from scratch.

    The teacher family of HEAD (a two-stage teacher for a one-stage student) and the two-stage
    rows of LSHFM.

    Args:
        depth: ResNet depth (18/34 use BasicBlock, 50+ Bottleneck).
        fpn_channels: FPN width (and RPN head width).
        fc_dim: width of the two fc layers of the box head (fc6, fc7).
    """
    model = get_config("common/models/mask_rcnn_fpn.py").model
    model.roi_heads.mask_in_features = None
    model.roi_heads.mask_pooler = None
    model.roi_heads.mask_head = None
    model.roi_heads.num_classes = len(SYNTHETIC_CLASSES)
    model.backbone.bottom_up.stem.norm = "BN"
    if depth < 50:
        model.backbone.bottom_up.stages = L(ResNet.make_default_stages)(depth=depth, norm="BN")
    else:
        model.backbone.bottom_up.stages.depth = depth
        model.backbone.bottom_up.stages.norm = "BN"
    model.backbone.norm = "BN"
    model.backbone.out_channels = fpn_channels
    model.proposal_generator.head.in_channels = fpn_channels
    # Anchors of 8..128 px on strides 4..64 (objects here are 6-40 px).
    model.proposal_generator.anchor_generator.sizes = [[8], [16], [32], [64], [128]]
    model.proposal_generator.pre_nms_topk = (1000, 1000)
    model.proposal_generator.post_nms_topk = (500, 500)
    # 128 sampled RoIs per image (25% positive) instead of 512: images hold ~10 objects, and the
    # 12544x1024 fc6 on 512 RoIs x 8 images dominated the CPU step.
    model.roi_heads.batch_size_per_image = 128
    model.roi_heads.box_head.input_shape = ShapeSpec(channels=fpn_channels, height=7, width=7)
    model.roi_heads.box_head.fc_dims = [fc_dim, fc_dim]
    model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=fc_dim)
    return model


# HEAD's two-stage teacher: Faster R-CNN R18, 256-ch FPN, the standard 2 x 1024 fc box head.
faster_rcnn_teacher_model = faster_rcnn_synth(depth=18, fpn_channels=256)
