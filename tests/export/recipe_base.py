# Tiny models and the synth_tiny data for the export tests (LazyConfig; never trained, random
# weights): ResNet-18 with BasicBlocks (res5 has 512 channels), a 64-channel FPN and a 1-conv head,
# so an export plus a parity check stays within seconds on 2 CPU cores.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone import ResNet
from omegaconf import OmegaConf

import d2kd.data  # noqa: F401  (registers synth_tiny_{train,val})

NUM_CLASSES = 18  # the synthetic dataset's 6 shapes x 3 colours


def tiny_retinanet(depth: int = 18, channels: int = 64, head_convs: int = 1):
    """RetinaNet node: ResNet-`depth` + FPN(`channels`) + a `head_convs`-conv head."""
    model = get_config("common/models/retinanet.py").model
    model.num_classes = NUM_CLASSES
    if depth < 50:
        stages = L(ResNet.make_default_stages)(depth=depth, norm="FrozenBN")
        model.backbone.bottom_up.stages = stages
        model.backbone.top_block.in_channels = 512
    else:
        model.backbone.bottom_up.stages.depth = depth
    model.backbone.out_channels = channels
    model.head.input_shape = [ShapeSpec(channels=channels)] * 5
    model.head.conv_dims = [channels] * head_convs
    # 128 px images with 6-40 px objects: anchors of 8..128 px
    sizes = (8, 16, 32, 64, 128)
    model.anchor_generator.sizes = [[s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)] for s in sizes]
    return model


def tiny_faster_rcnn(channels: int = 64):
    """Faster R-CNN node (no mask head): ResNet-18 + FPN(`channels`) + a 2x128 fc box head."""
    model = get_config("common/models/mask_rcnn_fpn.py").model
    model.backbone.bottom_up.stages = L(ResNet.make_default_stages)(depth=18, norm="FrozenBN")
    model.backbone.out_channels = channels
    model.proposal_generator.head.in_channels = channels
    model.proposal_generator.anchor_generator.sizes = [[8], [16], [32], [64], [128]]
    model.proposal_generator.post_nms_topk = (1000, 200)  # (train, test): fewer RoIs, faster
    rh = model.roi_heads
    rh.num_classes = NUM_CLASSES
    rh.box_head.input_shape = ShapeSpec(channels=channels, height=7, width=7)
    rh.box_head.fc_dims = [128, 128]
    rh.box_predictor.input_shape = ShapeSpec(channels=128)
    rh.mask_in_features = None
    rh.mask_pooler = None
    rh.mask_head = None
    return model


dataloader = OmegaConf.create()
dataloader.train = L(build_detection_test_loader)(  # only read for int8 calibration images
    dataset=L(get_detection_dataset_dicts)(names="synth_tiny_train", filter_empty=False),
    mapper=L(DatasetMapper)(is_train=False, augmentations=[], image_format="BGR"),
    num_workers=0,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_tiny_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=128, max_size=256)],
        image_format="BGR",
    ),
    num_workers=0,
)
dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}", tasks=("bbox",), output_dir=None
)
train = dict(output_dir="./output/export_test", device="cpu", init_checkpoint="", seed=0)
