# The quickstart baseline student: RetinaNet R18 (light head) trained alone on a 1x-style schedule.
from ..common.data.synthetic import dataloader
from ..common.optim import SGD as optimizer
from ..common.synth_schedule import synth_schedule
from ..common.train import train
from .models import student_model as model

lr_multiplier = synth_schedule(train, 1000, "./output/quickstart/baseline")

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="baseline", order=0, smoke="tests/configs/tiny_plain.py")
