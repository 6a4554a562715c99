# FGD on the embedded synthetic dataset: the quickstart R18 student (128-ch FPN, light head) under
# the quickstart RetinaNet teacher (R18, 256-ch FPN, 4 x 256 head), same data and schedule as the baseline student.
#   python tools/train_net.py --config-file configs/fgd/retinanet_R18_from_R18w_synth.py \
#       model.teacher.weights=$(python tools/quickstart.py --teacher-path)
from d2kd.distill import Distiller
from d2kd.distill.terms.fgd import FGDTerm
from detectron2.config import LazyCall as L

from ..quickstart.mse_R18_from_R18w import dataloader, lr_multiplier, model, optimizer, train

# The official RetinaNet values (temp 0.5, alpha 1e-3, beta 5e-4, gamma 5e-4, lambda 5e-6) on
# P3-P7; the student's 128-ch maps go through FGD's 1x1 `align` conv to the teacher's 256.
model.terms = {"fgd": L(FGDTerm)(levels=["p3", "p4", "p5", "p6", "p7"])}
model.weights = {"fgd": 1.0}
train.clip_grad = dict(max_norm=35)  # as the official FGD configs
train.output_dir = "./output/fgd/retinanet_R18_from_R18w_synth"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(
    name="fgd",
    order=20,
    smoke="tests/configs/tiny_fgd.py",
    coco={
        "RetinaNet R50 <- R101": "./retinanet_R50_from_R101_coco_2x.py",
        "Faster R-CNN R50 <- R101": "./faster_rcnn_R50_from_R101_coco_2x.py",
    },
)
