# DFAD's "KD with the original data" comparison (the paper's KD-ORI row): the same student,
# teacher and L1 discrepancy as retinanet_R18_from_R18w_synth.py, but on real synth_train images
# and without a generator. Same number of student updates (K per DFAD iteration) and images per
# update, so the two runs differ only in where the images come from.
#   python tools/train_net.py --config-file configs/dfad/retinanet_R18_from_R18w_synth_real.py \
#       model.teacher.weights=$(python tools/quickstart.py --teacher-path)
from detectron2.config import LazyCall as L

from d2kd.engine.lr import warmup_multistep

from ..common.data.synthetic import dataloader
from .retinanet_R18_from_R18w_synth import BATCH, K, model, optimizer, train

dataloader.train.total_batch_size = BATCH  # real images (horizontal flip), as the baseline
train.trainer = None  # Detectron2's SimpleTrainer: one student step per iteration
train.hooks = []
train.max_iter = 1000 * K  # = the DFAD recipe's student updates (1000 iterations x K)
train.eval_period = "${train.max_iter}"
train.checkpointer.period = 1000
lr_multiplier = L(warmup_multistep)(
    max_iter="${train.max_iter}", steps=(0.75, 0.9), warmup_iters=100 * K
)
train.output_dir = "./output/dfad/retinanet_R18_from_R18w_synth_real"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="dfad_real", order=61)
