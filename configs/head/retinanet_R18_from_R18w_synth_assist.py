# HEAD ablation, synthetic: the assistant alone (the paper's "Assist" row). As the official assist
# config, no teacher is used (no AKD, CKD or weight transfer), so this run needs no teacher file:
#   python tools/train_net.py --config-file configs/head/retinanet_R18_from_R18w_synth_assist.py
from ._variants import assistant_only
from .retinanet_R18_from_R18w_synth_akd_ckd import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.output_dir = "./output/head/retinanet_R18_from_R18w_synth_assist"
assistant_only(model)

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(
    name="head_assist", order=40, teacher="../quickstart/faster_rcnn_R18w_teacher.py"
)
