# LSHFM, VOC07+12 -> VOC07 test: RetinaNet R50-FPN <- RetinaNet R101-FPN, LSHL2 on the 3x3 patches
# of the cls tower (D = 2304; beta 7, 4096 hash functions), 24 epochs, the official run.
# The paper's numbers (LSHFM README, mAP@0.5): teacher 83.0, student 82.5, LSHL2 83.0.
# Data, schedule and LSHL2 values as faster_rcnn_R50_from_R101_voc_24e_lshl2.py; the detectors are
# RetinaNets. Both towers are 4 x 256, so there is no adapter. Mask: locations with a foreground
# anchor (mask="official" reproduces the official "not all anchors ignored" rule).
# Teacher weights expected: the R101 trained by retinanet_R101_voc_24e_teacher.py (the default
# path below), or pass model.teacher.weights=/path/to/model_final.pth.
#   python tools/train_net.py --num-gpus 4 \
#       --config-file configs/lshfm/retinanet_R50_from_R101_voc_24e_lshl2.py
import copy

from detectron2.config import LazyCall as L

from d2kd.distill.terms.mimic import RetinaNetMimicTerm

from .faster_rcnn_R50_from_R101_voc_24e_lshl2 import dataloader, lr_multiplier, model, train
from .retinanet_R101_voc_24e_teacher import model as teacher
from .retinanet_R101_voc_24e_teacher import optimizer

student = copy.deepcopy(teacher)
student.backbone.bottom_up.stages.depth = 50
model.student = student
model.teacher.update(
    model=teacher, weights="./output/lshfm/retinanet_R101_voc_24e_teacher/model_final.pth"
)
model.terms = {
    "lshfm": L(RetinaNetMimicTerm)(mode="lshl2", beta=7.0, hash_num=4096, mask="fg"),
}
train.output_dir = "./output/lshfm/retinanet_R50_from_R101_voc_24e_lshl2"
