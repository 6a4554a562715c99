# HEAD ablation, COCO: the assistant alone ("Assist"; official README: 33.4 box AP). As the
# official assist config, no teacher is used at all (no AKD, CKD or weight transfer).
from ._variants import assistant_only
from .retinanet_R18_from_R50_faster_coco_1x import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.output_dir = "./output/head/retinanet_R18_from_R50_faster_coco_1x_assist"
assistant_only(model)
