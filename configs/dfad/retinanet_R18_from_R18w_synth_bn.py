# DFAD with the teacher's BatchNorm statistics as an image prior in the generator's loss
# (DeepInversion / DIODE): -log(1 + L1) + BN_PRIOR * sum over the teacher's BN layers of
# ||batch mean - running mean|| + ||batch var - running var||. The paper's discrepancy.
from .retinanet_R18_from_R18w_synth import dataloader, lr_multiplier, model, optimizer, train

# DeepInversion's unnormalised norms summed over the teacher's ~26 BN layers are in the
# thousands (measured: ~8e3 on a random generator's batch of 4, ~2.6e3 on 4 real images): 1e-3
# puts the prior at the scale of the generator's -log(1 + L1), so neither drowns the other.
BN_PRIOR = 1e-3
train.hooks[0].bn_prior = BN_PRIOR
train.output_dir = "./output/dfad/retinanet_R18_from_R18w_synth_bn"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="dfad_bn", order=63)
