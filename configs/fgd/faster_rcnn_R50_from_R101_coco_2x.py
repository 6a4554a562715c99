# FGD, COCO: Faster R-CNN R50 <- Faster R-CNN R101, 2x, on P2-P5 (the R-CNN configs skip P6)
# with the official R-CNN weights (alpha 5e-5, beta 2.5e-5, gamma 5e-5, lambda 5e-7).
# FGD README (the paper's numbers, with a Cascade Mask R-CNN X101 teacher): 38.4 -> 42.0.
# Teacher weights: Detectron2's model zoo Faster R-CNN R101-FPN 3x.
import copy

from detectron2.config import LazyCall as L

from d2kd.distill import Distiller, Teacher
from d2kd.distill.terms.fgd import FGDTerm
from d2kd.losses.fgd import RCNN_HPARAMS

from ..common.coco_schedule import dataloader, lr_multiplier, optimizer, train
from ..common.models.faster_rcnn_fpn import model as student

teacher = copy.deepcopy(student)
teacher.backbone.bottom_up.stages.depth = 101

model = L(Distiller)(
    student=student,
    teacher=L(Teacher)(
        model=teacher,
        weights="detectron2://COCO-Detection/faster_rcnn_R_101_FPN_3x/137851257/model_final_f6e8b1.pkl",
    ),
    terms={
        "fgd": L(FGDTerm)(
            levels=["p2", "p3", "p4", "p5"],
            temp=RCNN_HPARAMS["temp"],
            alpha=RCNN_HPARAMS["alpha_fgd"],
            beta=RCNN_HPARAMS["beta_fgd"],
            gamma=RCNN_HPARAMS["gamma_fgd"],
            lam=RCNN_HPARAMS["lambda_fgd"],
        )
    },
    init_student_from_teacher=True,
)
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.clip_grad = dict(max_norm=35)
train.ddp.find_unused_parameters = True
optimizer.lr = 0.02  # the official two-stage lr at 16 images per batch
train.output_dir = "./output/fgd/faster_rcnn_R50_from_R101_coco_2x"
