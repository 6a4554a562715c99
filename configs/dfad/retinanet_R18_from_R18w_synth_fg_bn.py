# DFAD with both: the foreground-aware discrepancy and the teacher's BatchNorm prior.
from .retinanet_R18_from_R18w_synth_bn import BN_PRIOR
from .retinanet_R18_from_R18w_synth_fg import dataloader, lr_multiplier, model, optimizer, train

train.hooks[0].bn_prior = BN_PRIOR
train.output_dir = "./output/dfad/retinanet_R18_from_R18w_synth_fg_bn"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="dfad_fg_bn", order=64)
