# The quickstart baseline student: RetinaNet R18 (light head) trained alone on a 1x-style schedule.
from d2kd.engine.lr import warmup_multistep
from detectron2.config import LazyCall as L

from ..common.data.synthetic import dataloader
from ..common.optim import SGD as optimizer
from ..common.train import train
from .models import student_model as model

train.max_iter = 1000
train.eval_period = 1000
train.checkpointer.period = 500
train.output_dir = "./output/quickstart/baseline"
lr_multiplier = L(warmup_multistep)(
    max_iter="${train.max_iter}", steps=(0.75, 0.9), warmup_iters=100
)

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="baseline", order=0, smoke="tests/configs/tiny_plain.py")
