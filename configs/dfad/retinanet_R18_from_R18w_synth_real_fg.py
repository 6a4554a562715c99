# The foreground-aware discrepancy on real images, without labels (retinanet_R18_from_R18w_synth_
# real.py with the loss of retinanet_R18_from_R18w_synth_fg.py): what the loss can teach when the
# images are right.
from .retinanet_R18_from_R18w_synth_real import dataloader, lr_multiplier, model, optimizer, train

model.terms["dfad"].update(form="foreground", cls_distance="bce", floor=0.05, box_threshold=0.5)
train.output_dir = "./output/dfad/retinanet_R18_from_R18w_synth_real_fg"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="dfad_real_fg", order=65)
