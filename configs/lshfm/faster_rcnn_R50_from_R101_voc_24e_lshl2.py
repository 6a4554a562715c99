# LSHFM, VOC07+12 -> VOC07 test: Faster R-CNN R50-FPN <- Faster R-CNN R101-FPN, LSHL2 on fc7 of
# the student's sampled RoIs (beta 7, 4096 hash functions, bias 0), 24 epochs, the official run.
# The paper's numbers (LSHFM README, mAP@0.5): teacher 83.6, student 82.0, LSHL2 83.0.
# Teacher weights expected: the R101 trained by faster_rcnn_R101_voc_24e_teacher.py (the default
# path below), or pass model.teacher.weights=/path/to/model_final.pth.
#   python tools/train_net.py --num-gpus 4 \
#       --config-file configs/lshfm/faster_rcnn_R50_from_R101_voc_24e_lshl2.py
import copy

from detectron2.config import LazyCall as L

from d2kd.distill import Distiller, Teacher
from d2kd.distill.terms.mimic import RCNNMimicTerm

from .faster_rcnn_R101_voc_24e_teacher import dataloader, lr_multiplier
from .faster_rcnn_R101_voc_24e_teacher import model as teacher
from .faster_rcnn_R101_voc_24e_teacher import optimizer, train

student = copy.deepcopy(teacher)
student.backbone.bottom_up.stages.depth = 50

model = L(Distiller)(
    student=student,
    teacher=L(Teacher)(
        model=teacher, weights="./output/lshfm/faster_rcnn_R101_voc_24e_teacher/model_final.pth"
    ),
    terms={"lshfm": L(RCNNMimicTerm)(mode="lshl2", beta=7.0, hash_num=4096, seed=0)},
    weights={"lshfm": 1.0},  # beta lives in the term
)
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
# The official code does not clip (it stops on a non-finite loss); we clip as a guard.
train.clip_grad = dict(max_norm=35)
train.output_dir = "./output/lshfm/faster_rcnn_R50_from_R101_voc_24e_lshl2"
