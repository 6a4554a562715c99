# The quickstart teacher: RetinaNet R50 on the synthetic dataset, trained from scratch on a long
# schedule (a short one leaves R50 far below R18, shared/measurements.md).
from d2kd.engine.lr import warmup_multistep
from detectron2.config import LazyCall as L

from ..common.data.synthetic import dataloader
from ..common.optim import SGD as optimizer
from ..common.train import train
from .models import teacher_model as model

train.max_iter = 2000  # 5.3 epochs of 3000 images at batch 8, twice the students' schedule
train.eval_period = 1000
train.checkpointer.period = 500
train.output_dir = "./output/quickstart/teacher"
lr_multiplier = L(warmup_multistep)(
    max_iter="${train.max_iter}", steps=(0.75, 0.9), warmup_iters=300
)  # a deep net from scratch: warm up longer
