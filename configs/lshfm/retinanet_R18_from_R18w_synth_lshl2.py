# LSHFM (LSHL2) on the embedded synthetic dataset: the quickstart RetinaNet R18 student (128-ch
# FPN, 2 x 128 head) under the quickstart RetinaNet teacher (R18, 256-ch FPN, 4 x 256 head), same
# data and schedule as the baseline student and configs/fgd/retinanet_R18_from_R18w_synth.py.
#   python tools/train_net.py --config-file configs/lshfm/retinanet_R18_from_R18w_synth_lshl2.py \
#       model.teacher.weights=$(python tools/quickstart.py --teacher-path)
from detectron2.config import LazyCall as L

from d2kd.distill.terms.mimic import RetinaNetMimicTerm

from ..quickstart.mse_R18_from_R18w import dataloader, lr_multiplier, model, optimizer, train

# The official RetinaNet run: LSHL2, beta 7, 4096 hash functions on the 3x3 patches of the cls
# tower (D = 9 x 256 = 2304). The student's 128-ch tower gets a 1x1 conv to 256 channels before
# the patches are taken (the official students had the teacher's width and no adapter). Masked
# to locations with a foreground anchor (mask="official" reproduces the official rule).
model.terms = {
    "lshfm": L(RetinaNetMimicTerm)(mode="lshl2", beta=7.0, hash_num=4096, mask="fg", seed=0)
}
model.weights = {"lshfm": 1.0}  # beta lives in the term, as the paper writes the loss
# The official code does not clip (it aborts on a non-finite loss); the LSH BCE has no finite
# minimiser, so we clip at FGD's 35 as a guard that leaves ordinary steps untouched.
train.clip_grad = dict(max_norm=35)
train.output_dir = "./output/lshfm/retinanet_R18_from_R18w_synth_lshl2"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="lshfm_lshl2", order=30, smoke="tests/configs/tiny_lshfm_retinanet.py")
