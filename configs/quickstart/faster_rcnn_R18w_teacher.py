# A two-stage teacher for the embedded synthetic dataset: Faster R-CNN R18 (256-ch FPN P2-P6,
# 2 x 1024 fc box head), trained from scratch. HEAD distils it into the quickstart RetinaNet
# student (a detector of another family); LSHFM's two-stage rows use it too. Trained once into the teacher cache (the folder of the path printed by
# `python tools/quickstart.py --teacher-path configs/quickstart/faster_rcnn_R18w_teacher.py`);
# benchmarks/accuracy_suite.py does this itself for the methods that need it.
from d2kd.engine.lr import warmup_multistep
from detectron2.config import LazyCall as L

from ..common.data.synthetic import dataloader
from ..common.optim import SGD as optimizer
from ..common.train import train
from .models import faster_rcnn_teacher_model as model

# 1.5x the students' schedule (the RetinaNet teacher has 2.5x), to fit the CPU budget; its AP
# against the RetinaNet student is in projects/HEAD/README.md.
train.max_iter = 1500
train.eval_period = 1500
train.checkpointer.period = 500
train.output_dir = "./output/quickstart/faster_rcnn_teacher"
lr_multiplier = L(warmup_multistep)(
    max_iter="${train.max_iter}", steps=(0.75, 0.9), warmup_iters=100
)
