# The synthetic RetinaNet teacher recipe as it stood before benchmarks/teacher_ablation.py
# (13.3 AP after 2500 iterations): kept verbatim as the ablation's base row, so every row of
# benchmarks/README.md's ablation table can be rerun against it.
from ...common.data.synthetic import dataloader
from ...common.optim import SGD as optimizer
from ...common.synth_schedule import synth_schedule
from ...common.train import train
from ..models import retinanet_synth

# No norm in the head and Detectron2's matcher thresholds, as v1 had (now non-defaults).
model = retinanet_synth(
    depth=18, fpn_channels=256, head_convs=4, head_norm="", match_thresholds=(0.4, 0.5)
)
optimizer.lr = 0.02
lr_multiplier = synth_schedule(train, 2500, "./output/quickstart/teacher_v1")
