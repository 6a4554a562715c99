# Plain FPN feature-MSE distillation: the R18 baseline student under the R18-wide teacher, same schedule.
from d2kd.distill import Distiller, Teacher
from d2kd.distill.terms.feature_mse import FeatureMSETerm
from detectron2.config import LazyCall as L

from .models import student_model, teacher_model
from .retinanet_R18_baseline import dataloader, lr_multiplier, optimizer, train

model = L(Distiller)(
    student=student_model,
    teacher=L(Teacher)(
        model=teacher_model,
        # The teacher trained by retinanet_R18w_teacher.py; `make quickstart` passes the one it
        # cached (`python tools/quickstart.py --teacher-path` prints where it is).
        weights="",
    ),
    terms={"mse": L(FeatureMSETerm)(levels=["p3", "p4", "p5", "p6", "p7"])},
    weights={"mse": 1.0},
)
train.output_dir = "./output/quickstart/mse"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods"). MSE has no
# COCO recipe: train_overhead.py --coco-shapes times it on FGD's, with this term on P3-P7.
__benchmark__ = dict(
    name="mse",
    order=10,
    smoke="tests/configs/tiny_distill.py",
    coco={"RetinaNet R50 <- R101": "../fgd/retinanet_R50_from_R101_coco_2x.py"},
    coco_terms="d2kd.distill.terms.feature_mse.FeatureMSETerm",
)
