# IKD, COCO, online: the offline recipe without the stored copies; the adversarial term attacks the
# teacher on the fly (no extra disk, more compute per step: see projects/IKD/README.md).
#   python tools/train_net.py --config-file configs/ikd/retinanet_R50_from_X101_coco_2x_online.py \
#       --num-gpus 8 model.teacher.weights=/path/to/X101_teacher.pth
from .retinanet_R50_from_X101_coco_2x_offline import (
    dataloader,
    ikd,
    lr_multiplier,
    model,
    optimizer,
    train,
)
from ._parts import make_online

make_online(dataloader, train, ikd.attack)
train.output_dir = "./output/ikd/retinanet_R50_from_X101_coco_2x_online"
