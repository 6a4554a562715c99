# RetinaNet with a MobileNetV2 backbone, FPN P3-P7: Detectron2's stock RetinaNet with the bottom-up
# network swapped. res3/res4/res5 = 32/96/1280 channels at strides 8/16/32 (mmdet's MobileNetV2
# out_indices (2, 4, 7), which HEAD's FPN reads with start_level=1); P6/P7 on res5 as ResNet's.
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from d2kd.modeling.backbone import MobileNetV2

model = get_config("common/models/retinanet.py").model
model.backbone.bottom_up = L(MobileNetV2)(out_features=["res3", "res4", "res5"], norm="BN")
model.backbone.top_block.in_channels = 1280
