# A distillation recipe as d2kd writes them: cfg.model is a Distiller node whose `student` is a
# stock RetinaNet (R18) and whose `teacher` a bigger one (R50, never built by export).
from detectron2.config import LazyCall as L

from d2kd.distill import Distiller, Teacher
from d2kd.distill.terms.feature_mse import FeatureMSETerm

from .recipe_base import dataloader, tiny_retinanet, train  # noqa: F401

model = L(Distiller)(
    student=tiny_retinanet(depth=18),
    teacher=L(Teacher)(model=tiny_retinanet(depth=50, channels=128), weights="unused.pth"),
    terms={"mse": L(FeatureMSETerm)(levels=["p3", "p4", "p5", "p6", "p7"])},
    weights={"mse": 1.0},
)
