# TF-HEAD, COCO: RetinaNet R18 with an assistant and no teacher; CKD regresses the cls-tower
# feature at each proposal's anchor onto the student's own assistant fc7 (detached). The official
# code is unreleased (README: "Coming soon"); this follows the exploratory `dev` branch (per-anchor
# adapter, weight 1.3 warmed up over 2000 iterations, assistant losses warmed up over 2000) without
# its early stop of CKD after 8 epochs. The paper's abstract reports 33.9 box AP (31.7 baseline).
from ._variants import tf_head
from .retinanet_R18_from_R50_faster_coco_1x import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.output_dir = "./output/head/retinanet_R18_tf_head_coco_1x"
tf_head(model, warmup_iters=2000)
