# FGD, COCO: RetinaNet R50 student <- RetinaNet X101-64x4d teacher, 2x, the paper's RetinaNet
# setting (FGD README: 37.4 -> 40.7 box AP, the paper's numbers).
#
# Teacher weights expected: a Detectron2 RetinaNet X101-64x4d-FPN checkpoint trained on COCO
# (Detectron2's model zoo has none; train one with this teacher node, or use the R101 variant,
# retinanet_R50_from_R101_coco_2x.py, whose teacher is in the zoo). Pass it with
# model.teacher.weights=/path/to/model_final.pth.
import copy

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from d2kd.distill import Distiller, Teacher
from d2kd.distill.terms.fgd import FGDTerm
from d2kd.modeling.backbone import make_resnext_stages

from ..common.coco_schedule import dataloader, lr_multiplier, optimizer, train

student = get_config("common/models/retinanet.py").model
teacher = copy.deepcopy(student)
teacher.backbone.bottom_up.stages = L(make_resnext_stages)(
    depth=101, num_groups=64, width_per_group=4
)
teacher.pixel_std = [57.375, 57.120, 58.395]  # Detectron2's X101 checkpoints use RGB-style std

model = L(Distiller)(
    student=student,
    teacher=L(Teacher)(model=teacher, weights=""),
    # The official RetinaNet values: temp 0.5, alpha 1e-3, beta 5e-4, gamma 5e-4, lambda 5e-6.
    terms={"fgd": L(FGDTerm)(levels=["p3", "p4", "p5", "p6", "p7"])},
    init_student_from_teacher=True,  # the official configs inherit the teacher's neck and head
)
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.clip_grad = dict(max_norm=35)  # as the official FGD configs
train.ddp.find_unused_parameters = True  # as the official code
optimizer.lr = 0.01  # the official RetinaNet lr at 16 images per batch
train.output_dir = "./output/fgd/retinanet_R50_from_X101_coco_2x"
