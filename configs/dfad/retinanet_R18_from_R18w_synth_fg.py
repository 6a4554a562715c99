# DFAD with the foreground-aware discrepancy (d2kd.losses.discrepancy): each anchor's class
# distance (Bernoulli KL of the sigmoid scores) weighted by the teacher's max class probability,
# at least 0.05; box deltas compared only where that probability is >= 0.5. Everything else as
# retinanet_R18_from_R18w_synth.py (the paper's all-anchor mean L1).
from .retinanet_R18_from_R18w_synth import dataloader, lr_multiplier, model, optimizer, train

model.terms["dfad"].update(form="foreground", cls_distance="bce", floor=0.05, box_threshold=0.5)
train.output_dir = "./output/dfad/retinanet_R18_from_R18w_synth_fg"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="dfad_fg", order=62)
