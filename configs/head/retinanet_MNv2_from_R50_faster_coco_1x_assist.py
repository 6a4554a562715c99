# HEAD ablation, COCO, MobileNetV2 student: the assistant alone ("Assist"; official README:
# 28.9 box AP). As the official assist config, no teacher is used at all (no AKD, CKD or weight
# transfer).
from .retinanet_MNv2_from_R50_faster_coco_1x import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.teacher = None
model.terms = {"assist": model.terms["assist"]}
model.terms["assist"].init_from_teacher = False
model.weights = {"assist": 1.0}
train.output_dir = "./output/head/retinanet_MNv2_from_R50_faster_coco_1x_assist"
