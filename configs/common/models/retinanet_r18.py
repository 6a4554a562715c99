# RetinaNet with a ResNet-18 (BasicBlock) backbone, FPN P3-P7: Detectron2's stock RetinaNet with
# only the backbone swapped (res3/res4/res5 have 128/256/512 channels for ResNet-18).
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone import ResNet

model = get_config("common/models/retinanet.py").model
model.backbone.bottom_up.stages = L(ResNet.make_default_stages)(depth=18, norm="FrozenBN")
model.backbone.top_block.in_channels = 512
