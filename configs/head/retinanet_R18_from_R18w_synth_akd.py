# HEAD ablation, synthetic: assistant + AKD, no CKD (the paper's "HEAD_dag" row).
#   python tools/train_net.py --config-file configs/head/retinanet_R18_from_R18w_synth_akd.py \
#       model.teacher.weights=$(python tools/quickstart.py --teacher-path \
#       configs/quickstart/faster_rcnn_R18w_teacher.py)
from ._variants import without_ckd
from .retinanet_R18_from_R18w_synth_akd_ckd import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.output_dir = "./output/head/retinanet_R18_from_R18w_synth_akd"
without_ckd(model)

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="head_akd", order=41, teacher="../quickstart/faster_rcnn_R18w_teacher.py")
