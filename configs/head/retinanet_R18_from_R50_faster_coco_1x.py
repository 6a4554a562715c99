# HEAD, COCO: RetinaNet R18 student <- Faster R-CNN R50-FPN teacher, 1x multi-scale, assistant +
# AKD + CKD, the paper's settings (official README: 31.7 -> 36.1 box AP, the paper's numbers).
#
# Teacher weights: Detectron2's model zoo Faster R-CNN R50-FPN 3x (37.9 AP; the paper used mmdet's
# mstrain-3x R50 at 40.3). Student init: ImageNet R18 in Detectron2 format (Detectron2's zoo has
# none: convert torchvision's resnet18 with detectron2's tools/convert-torchvision-to-d2.py, reverse
# stem.conv1's input channels to BGR, and pass train.init_checkpoint=/path/to/r18.pkl).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from d2kd.distill import Distiller, LinearWarmup, Teacher
from d2kd.distill.terms.head import HEADTerm
from d2kd.engine.lr import warmup_multistep

from ..common.coco_schedule import dataloader, optimizer, train
from ..common.models.faster_rcnn_fpn import model as teacher
from ..common.models.retinanet_r18 import model as student

student.pixel_std = [57.375, 57.120, 58.395]  # ImageNet weights from torchvision (BGR order)

TEACHER_WEIGHTS = (
    "detectron2://COCO-Detection/faster_rcnn_R_50_FPN_3x/137849458/model_final_280758.pkl"
)
# KD weights rise linearly from 0 to 2.0 over the first 2000 iterations (todd's WarmupScheduler).
KD_WEIGHT = L(LinearWarmup)(weight=2.0, warmup_iters=2000)
model = L(Distiller)(
    student=student,
    teacher=L(Teacher)(
        model=teacher,
        weights=TEACHER_WEIGHTS,
    ),
    # The assistant with AKD and CKD: Faster R-CNN sampling (512 RoIs, 25% positive, GT
    # appended) on proposals made like mmdet's rpn_proposal (2000 per level, NMS 0.7 per level,
    # 1000 per image); the assistant starts from the teacher's box head (weight transfer).
    terms={"head": L(HEADTerm)(akd=True, ckd="teacher", init_from_teacher=True)},
    weights={"loss_akd": KD_WEIGHT, "loss_ckd": KD_WEIGHT},  # the assistant's losses at 1
)
# mmdet's multi-scale 1x: shorter side in [640, 800], max 1333; 12 epochs at 16 images per batch
# (7330 iterations each), LR x0.1 at epochs 8 and 11, 500-iteration linear warm-up from 0.001.
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(640, 800), max_size=1333, sample_style="range"),
    L(T.RandomFlip)(horizontal=True),
]
train.max_iter = 87960
lr_multiplier = L(warmup_multistep)(
    max_iter="${train.max_iter}", steps=(8 / 12, 11 / 12), warmup_iters=500, warmup_factor=0.001
)
optimizer.lr = 0.01  # the official override at 16 images per batch
train.clip_grad = dict(max_norm=20)  # HEAD's schedule_1x
train.init_checkpoint = ""  # ImageNet R18 (see above)
train.output_dir = "./output/head/retinanet_R18_from_R50_faster_coco_1x"
