# TF-HEAD on the synthetic dataset: the quickstart R18 student with an assistant and no teacher;
# CKD regresses the cls-tower feature at each proposal's anchor onto the student's own assistant
# fc7 (detached). The official code is unreleased; as its exploratory `dev` branch: a per-anchor
# adapter, weight 1.3 and the assistant's losses both warmed up (2000 iterations there, scaled to
# our 100-iteration LR warm-up as in retinanet_R18_from_R18w_synth_akd_ckd.py), no early stop.
#   python tools/train_net.py --config-file configs/head/retinanet_R18_tf_head_synth.py
from detectron2.config import LazyCall as L

from d2kd.distill.terms.head import CKDTerm
from d2kd.distill import LinearWarmup

from ._variants import assistant_only
from .retinanet_R18_from_R18w_synth_akd_ckd import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

assistant_only(model)
model.terms["ckd"] = L(CKDTerm)(target="assistant", target_dim=1024, per_anchor=True)
model.weights = {
    "assist": L(LinearWarmup)(weight=1.0, warmup_iters=100),
    "ckd": L(LinearWarmup)(weight=1.3, warmup_iters=100),
}
train.output_dir = "./output/head/retinanet_R18_tf_head_synth"
