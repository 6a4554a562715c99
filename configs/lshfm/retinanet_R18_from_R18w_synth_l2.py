# LSHFM's L2 mimicking alone (beta 7 x mean squared error of the cls tower's 3x3 patches); see
# retinanet_R18_from_R18w_synth_lshl2.py for the setting.
from .retinanet_R18_from_R18w_synth_lshl2 import dataloader, lr_multiplier, model, optimizer, train

model.terms["lshfm"].mode = "l2"
train.output_dir = "./output/lshfm/retinanet_R18_from_R18w_synth_l2"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="lshfm_l2", order=31)
