# FGD, COCO: RetinaNet R50 <- RetinaNet R101 (the `*_r101_distill_*_r50` alternative of the
# official configs). Teacher weights: Detectron2's model zoo RetinaNet R101-FPN 3x.
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import ResNet

from .retinanet_R50_from_X101_coco_2x import dataloader, lr_multiplier, model, optimizer, train

model.teacher.model.backbone.bottom_up.stages = L(ResNet.make_default_stages)(
    depth=101, stride_in_1x1=True, norm="FrozenBN"
)
model.teacher.model.pixel_std = [1.0, 1.0, 1.0]  # MSRA-initialised zoo models
model.teacher.weights = (
    "detectron2://COCO-Detection/retinanet_R_101_FPN_3x/190397697/model_final_971ab9.pkl"
)
train.output_dir = "./output/fgd/retinanet_R50_from_R101_coco_2x"
