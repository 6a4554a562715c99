# FGD, COCO: FCOS R50 <- FCOS R101, 2x, with the official FCOS values (temp 0.8, alpha 1.6e-3,
# beta 8e-4, gamma 8e-4, lambda 8e-6). FGD README (the paper's numbers): FCOS R50 38.5 -> 42.7.
# Teacher weights expected: a Detectron2 FCOS R101-FPN checkpoint (the model zoo has none; train
# one with the teacher node) passed as model.teacher.weights=...
import copy

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from d2kd.distill import Distiller, Teacher
from d2kd.distill.terms.fgd import FGDTerm

from ..common.coco_schedule import dataloader, lr_multiplier, optimizer, train

student = get_config("common/models/fcos.py").model
teacher = copy.deepcopy(student)
teacher.backbone.bottom_up.stages.depth = 101

model = L(Distiller)(
    student=student,
    teacher=L(Teacher)(model=teacher, weights=""),
    terms={
        "fgd": L(FGDTerm)(
            levels=["p3", "p4", "p5", "p6", "p7"],
            temp=0.8,
            alpha=1.6e-3,
            beta=8e-4,
            gamma=8e-4,
            lam=8e-6,
        )
    },
    init_student_from_teacher=True,
)
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.clip_grad = dict(max_norm=35)
train.ddp.find_unused_parameters = True
optimizer.lr = 0.01
train.output_dir = "./output/fgd/fcos_R50_from_R101_coco_2x"
