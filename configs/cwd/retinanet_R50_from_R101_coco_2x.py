# CWD, COCO: RetinaNet R50 <- RetinaNet R101, 2x: FGD's R101 recipe (data, schedule, lr 0.01,
# Detectron2's model zoo R101 teacher) with the official CWD values. The official config distils
# from RetinaNet X101-64x4d (its README: 37.4 -> 40.5 box AP, their numbers); X101 is not in
# Detectron2's zoo, R101 is.
from detectron2.config import LazyCall as L

from d2kd.distill.terms.cwd import CWDTerm

from ..fgd.retinanet_R50_from_R101_coco_2x import dataloader, lr_multiplier, model, optimizer, train

# tau 1 on P3-P6, weight 5 per level; the student starts from ImageNet weights (no inheriting of
# the teacher's neck and head) and gradients are not clipped, as the official config.
model.terms = {"cwd": L(CWDTerm)(levels=["p3", "p4", "p5", "p6"], tau=1.0)}
model.weights = {"cwd": 5.0}
model.init_student_from_teacher = False
train.clip_grad = None
train.output_dir = "./output/cwd/retinanet_R50_from_R101_coco_2x"
