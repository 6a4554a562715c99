# HEAD ablation, COCO: assistant + AKD, no CKD ("HEAD_dag"; official README: 35.7 box AP).
from ._variants import without_ckd
from .retinanet_R18_from_R50_faster_coco_1x import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.output_dir = "./output/head/retinanet_R18_from_R50_faster_coco_1x_akd"
without_ckd(model)
