# FGD, COCO: RetinaNet R50 <- RetinaNet R101 (the `*_r101_distill_*_r50` alternative of the
# official configs). Teacher weights: Detectron2's model zoo RetinaNet R101-FPN 3x.
from ..common.models.retinanet_r101 import COCO_WEIGHTS
from ..common.models.retinanet_r101 import model as _r101
from .retinanet_R50_from_X101_coco_2x import dataloader, lr_multiplier, model, optimizer, train

model.teacher.model = _r101
model.teacher.weights = COCO_WEIGHTS
train.output_dir = "./output/fgd/retinanet_R50_from_R101_coco_2x"
