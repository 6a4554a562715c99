# LSHFM (LSHL2) on the embedded synthetic dataset, two-stage: a Faster R-CNN R18 student (128-ch
# FPN, 2 x 1024 fc box head, so fc7 is 1024-d as the teacher's) under the quickstart Faster R-CNN
# teacher (R18, 256-ch FPN, 2 x 1024 fc), on the students' synthetic schedule (1000 iterations,
# batch 8). Teacher weights: the checkpoint trained by
# configs/quickstart/faster_rcnn_R18w_teacher.py:
#   python tools/train_net.py --config-file configs/lshfm/faster_rcnn_R18_from_R18w_synth_lshl2.py \
#       model.teacher.weights=$(python tools/quickstart.py \
#           --teacher-path configs/quickstart/faster_rcnn_R18w_teacher.py)
from detectron2.config import LazyCall as L

from d2kd.distill import Distiller, Teacher
from d2kd.distill.terms.mimic import RCNNMimicTerm

from ..quickstart.models import faster_rcnn_synth, faster_rcnn_teacher_model
from ..quickstart.retinanet_R18_baseline import dataloader, lr_multiplier, optimizer, train

model = L(Distiller)(
    student=faster_rcnn_synth(depth=18, fpn_channels=128, fc_dim=1024),
    teacher=L(Teacher)(model=faster_rcnn_teacher_model, weights=""),
    # The official Faster R-CNN run: LSHL2, beta 7, 4 x 1024 = 4096 hash functions on the
    # post-ReLU fc7 of the student's sampled RoIs; the projection scale is the std of the
    # loaded teacher's cls_score weights.
    terms={"lshfm": L(RCNNMimicTerm)(mode="lshl2", beta=7.0, hash_num=4096, seed=0)},
    weights={"lshfm": 1.0},
)
train.clip_grad = dict(max_norm=35)  # no clip in the official code; a guard against LSH blow-ups
train.output_dir = "./output/lshfm/faster_rcnn_R18_from_R18w_synth_lshl2"
