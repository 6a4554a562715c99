# HEAD, COCO: RetinaNet MobileNetV2 student <- Faster R-CNN R50-FPN teacher, 1x multi-scale,
# assistant + AKD + CKD, the paper's settings (official README: 27.8 -> 33.1 box AP, the paper's
# numbers).
#
# Teacher weights: Detectron2's model zoo Faster R-CNN R50-FPN 3x (37.9 AP; the paper used mmdet's
# mstrain-3x R50 at 40.3). Student init: ImageNet MobileNetV2, e.g. torchvision's weights through
# d2kd.modeling.backbone.mobilenetv2.convert_torchvision_mobilenetv2, saved as {"model": ...} and
# passed as train.init_checkpoint=/path/to/mbv2.pth.
from ._variants import mobilenetv2_student
from .retinanet_R18_from_R50_faster_coco_1x import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.student = mobilenetv2_student()
train.init_checkpoint = ""  # ImageNet MobileNetV2 (see above)
train.output_dir = "./output/head/retinanet_MNv2_from_R50_faster_coco_1x"
