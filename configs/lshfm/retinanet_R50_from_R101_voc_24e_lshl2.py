# LSHFM, VOC07+12 -> VOC07 test: RetinaNet R50-FPN <- RetinaNet R101-FPN, LSHL2 on the 3x3 patches
# of the cls tower (D = 2304; beta 7, 4096 hash functions), 24 epochs, the official run.
# The paper's numbers (LSHFM README, mAP@0.5): teacher 83.0, student 82.5, LSHL2 83.0.
# Both towers are 4 x 256, so there is no adapter. Mask: locations with a foreground anchor
# (mask="official" reproduces the official "not all anchors ignored" rule).
# Teacher weights expected: the R101 trained by retinanet_R101_voc_24e_teacher.py (the default
# path below), or pass model.teacher.weights=/path/to/model_final.pth.
#   python tools/train_net.py --num-gpus 4 \
#       --config-file configs/lshfm/retinanet_R50_from_R101_voc_24e_lshl2.py
import copy

from detectron2.config import LazyCall as L

from d2kd.distill import Distiller, Teacher
from d2kd.distill.terms.mimic import RetinaNetMimicTerm

from .retinanet_R101_voc_24e_teacher import dataloader, lr_multiplier
from .retinanet_R101_voc_24e_teacher import model as teacher
from .retinanet_R101_voc_24e_teacher import optimizer, train

student = copy.deepcopy(teacher)
student.backbone.bottom_up.stages.depth = 50

model = L(Distiller)(
    student=student,
    teacher=L(Teacher)(
        model=teacher, weights="./output/lshfm/retinanet_R101_voc_24e_teacher/model_final.pth"
    ),
    terms={"lshfm": L(RetinaNetMimicTerm)(mode="lshl2", beta=7.0, hash_num=4096, mask="fg")},
    weights={"lshfm": 1.0},  # beta lives in the term
)
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.clip_grad = dict(max_norm=35)  # no clip in the official code; a guard against LSH blow-ups
train.output_dir = "./output/lshfm/retinanet_R50_from_R101_voc_24e_lshl2"
