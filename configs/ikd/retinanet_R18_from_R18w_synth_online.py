# IKD on the synthetic dataset, online: as the offline recipe, but the hook has the adversarial
# term attack the teacher on the fly (no folder to make first).
#   python tools/train_net.py --config-file configs/ikd/retinanet_R18_from_R18w_synth_online.py \
#       model.teacher.weights=$(python tools/quickstart.py --teacher-path)
from .retinanet_R18_from_R18w_synth_offline import (
    dataloader,
    ikd,
    lr_multiplier,
    model,
    optimizer,
    train,
)
from ._parts import make_online

make_online(dataloader, train, ikd.attack)
train.output_dir = "./output/ikd/retinanet_R18_from_R18w_synth_online"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="ikd_online", order=51, smoke="tests/configs/tiny_ikd.py")
