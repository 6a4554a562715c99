# CWD on the embedded synthetic dataset: the quickstart R18 student (128-ch FPN, light head) under
# the quickstart RetinaNet teacher (R18, 256-ch FPN, 4 x 256 head), same data and schedule as the
# baseline student and the FGD recipe.
#   python tools/train_net.py --config-file configs/cwd/retinanet_R18_from_R18w_synth.py \
#       model.teacher.weights=$(python tools/quickstart.py --teacher-path)
from detectron2.config import LazyCall as L

from d2kd.distill.terms.cwd import CWDTerm

from ..quickstart.mse_R18_from_R18w import dataloader, lr_multiplier, model, optimizer, train

# The official RetinaNet config: tau 1 on P3-P6, weight 5 per level (here P7 is 1x1, a
# one-location distribution whose KL is always 0). The student's 128-ch maps go through a 1x1
# conv adapter to the teacher's 256. No gradient clipping, as the official config.
model.terms = {"cwd": L(CWDTerm)(levels=["p3", "p4", "p5", "p6"], tau=1.0)}
model.weights = {"cwd": 5.0}
train.output_dir = "./output/cwd/retinanet_R18_from_R18w_synth"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(
    name="cwd",
    order=70,
    coco={"RetinaNet R50 <- R101": "./retinanet_R50_from_R101_coco_2x.py"},
)
