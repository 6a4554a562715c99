# The synthetic RetinaNet teacher recipe as it stood before benchmarks/teacher_ablation.py
# (13.3 AP after 2500 iterations): kept verbatim as the ablation's base row, so every row of
# benchmarks/README.md's ablation table can be rerun against it.
from d2kd.engine.lr import warmup_multistep
from detectron2.config import LazyCall as L

from ...common.data.synthetic import dataloader
from ...common.optim import SGD as optimizer
from ...common.train import train
from ..models import retinanet_synth

model = retinanet_synth(depth=18, fpn_channels=256, head_convs=4)
optimizer.lr = 0.02
train.max_iter = 2500
train.eval_period = 2500
train.checkpointer.period = 500
train.output_dir = "./output/quickstart/teacher_v1"
lr_multiplier = L(warmup_multistep)(
    max_iter="${train.max_iter}", steps=(0.75, 0.9), warmup_iters=100
)
