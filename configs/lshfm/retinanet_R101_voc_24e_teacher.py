# The RetinaNet R101-FPN teacher of LSHFM's VOC rows, trained alone (a plain Detectron2 recipe;
# the model zoo has no VOC RetinaNet). VOC data and schedule as faster_rcnn_R101_voc_24e_teacher.py,
# with the official RetinaNet lr of 0.005 at 8 images per batch.
#   python tools/train_net.py --num-gpus 4 \
#       --config-file configs/lshfm/retinanet_R101_voc_24e_teacher.py
from detectron2.model_zoo import get_config

from .faster_rcnn_R101_voc_24e_teacher import dataloader, lr_multiplier, optimizer, train

model = get_config("common/models/retinanet.py").model
model.num_classes = 20
model.backbone.bottom_up.stages.depth = 101
optimizer.lr = 0.005
train.output_dir = "./output/lshfm/retinanet_R101_voc_24e_teacher"
