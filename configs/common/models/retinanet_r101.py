# RetinaNet R101-FPN: Detectron2's stock RetinaNet (MSRA ResNet, stride in the 1x1 conv, FrozenBN,
# pixel std 1) with a 101-layer backbone, the COCO teacher of the FGD, LSHFM and DFAD R101 recipes.
from detectron2.model_zoo import get_config

model = get_config("common/models/retinanet.py").model
model.backbone.bottom_up.stages.depth = 101

# Detectron2's model zoo RetinaNet R101-FPN 3x, trained on COCO (40.4 box AP).
COCO_WEIGHTS = "detectron2://COCO-Detection/retinanet_R_101_FPN_3x/190397697/model_final_971ab9.pkl"
