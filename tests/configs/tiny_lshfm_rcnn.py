# A seconds-scale Faster R-CNN LSHFM recipe for tests: R18 Faster R-CNNs with 32/64-ch FPNs and
# 64-d box heads on 64 px crops; LSHL2 on fc7 of the student's sampled RoIs.
from detectron2.config import LazyCall as L

from d2kd.distill import Distiller, Teacher
from d2kd.distill.terms.mimic import RCNNMimicTerm

from ...configs.quickstart.models import faster_rcnn_synth
from .tiny_distill import dataloader, lr_multiplier, optimizer, train

student = faster_rcnn_synth(depth=18, fpn_channels=32, fc_dim=64)
student.roi_heads.batch_size_per_image = 32
teacher = faster_rcnn_synth(depth=18, fpn_channels=64, fc_dim=64)
model = L(Distiller)(
    student=student,
    teacher=L(Teacher)(model=teacher, weights=""),
    terms={"lshfm": L(RCNNMimicTerm)(mode="lshl2", beta=7.0, hash_num=128)},
    weights={"lshfm": 1.0},
)
train.clip_grad = dict(max_norm=10)
