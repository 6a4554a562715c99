# TF-HEAD on the synthetic dataset: the quickstart R18 student with an assistant and no teacher;
# CKD regresses the cls-tower feature at each proposal's anchor onto the student's own assistant
# fc7 (detached). The official code is unreleased; as its exploratory `dev` branch: a per-anchor
# adapter, weight 1.3 and the assistant's losses both warmed up (2000 iterations there, scaled to
# our 100-iteration LR warm-up as in retinanet_R18_from_R18w_synth_akd_ckd.py), no early stop.
#   python tools/train_net.py --config-file configs/head/retinanet_R18_tf_head_synth.py
from ._variants import tf_head
from .retinanet_R18_from_R18w_synth_akd_ckd import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.output_dir = "./output/head/retinanet_R18_tf_head_synth"
tf_head(model, warmup_iters=100)

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="tf_head", order=43, teacher="../quickstart/faster_rcnn_R18w_teacher.py")
