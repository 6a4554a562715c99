# LSHFM's LSH mimicking alone (beta 7 x BCE of the student's hash logits on the teacher's hash
# bits). The paper reports no LSH-only RetinaNet run (its README warns that LSH "easily gets NaN");
# here the fp32 loss, gradient clipping and the non-finite guard are what keep it in check.
from .retinanet_R18_from_R18w_synth_lshl2 import dataloader, lr_multiplier, model, optimizer, train

model.terms["lshfm"].mode = "lsh"
train.output_dir = "./output/lshfm/retinanet_R18_from_R18w_synth_lsh"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="lshfm_lsh", order=32)
