# HEAD ablation, COCO, MobileNetV2 student: the assistant alone ("Assist"; official README:
# 28.9 box AP). As the official assist config, no teacher is used at all (no AKD, CKD or weight
# transfer).
from ._variants import assistant_only
from .retinanet_MNv2_from_R50_faster_coco_1x import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.output_dir = "./output/head/retinanet_MNv2_from_R50_faster_coco_1x_assist"
assistant_only(model)
