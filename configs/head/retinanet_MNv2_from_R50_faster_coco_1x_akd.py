# HEAD ablation, COCO, MobileNetV2 student: assistant + AKD, no CKD ("HEAD_dag"; official
# README: 32.2 box AP).
from ._variants import without_ckd
from .retinanet_MNv2_from_R50_faster_coco_1x import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.output_dir = "./output/head/retinanet_MNv2_from_R50_faster_coco_1x_akd"
without_ckd(model)
