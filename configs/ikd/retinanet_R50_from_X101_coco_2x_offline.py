# IKD, COCO: RetinaNet R50 student <- RetinaNet X101-64x4d teacher, 2x, the paper's RetinaNet
# setting: FGD (official RetinaNet values) plus, for the first 16 of 24 epochs, the adversarial
# feature term on stored DI-FGSM copies of train2017 and the sample-specific augmentations; plain
# FGD for epochs 17-24, all in one run (the official needs two).
#
# Teacher weights expected: a Detectron2 RetinaNet X101-64x4d-FPN COCO checkpoint (see
# configs/fgd/retinanet_R50_from_X101_coco_2x.py). First make the adversarial copies (about the
# size of train2017 again; shard over GPUs with --num-gpus):
#   python tools/gen_adversarial.py \
#       --config-file configs/ikd/retinanet_R50_from_X101_coco_2x_offline.py \
#       --num-gpus 8 --batch-size 2 model.teacher.weights=/path/to/X101_teacher.pth
# then train:
#   python tools/train_net.py \
#       --config-file configs/ikd/retinanet_R50_from_X101_coco_2x_offline.py \
#       --num-gpus 8 model.teacher.weights=/path/to/X101_teacher.pth
import os

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from ..fgd.retinanet_R50_from_X101_coco_2x import dataloader, lr_multiplier, model, optimizer, train
from ._parts import add_adversarial_term, adversarial_window, pair_loader, paper_attack

ikd = dict(attack=paper_attack())  # read by tools/gen_adversarial.py
ADV_DIR = os.path.join(
    os.getenv("DETECTRON2_DATASETS", "datasets"), "ikd", "coco_2017_train_difgsm_eps8_step2_steps5"
)

model.weights = {"fgd": 1.0}
add_adversarial_term(model, levels=["p3", "p4", "p5", "p6", "p7"])
# The official DFA pipeline: single scale 1333x800 (the test scale, at which the copies are made),
# InstanceAug before the resize, RandomCrop(relative_range 0.8, adaptive) after it, then flip.
dataloader.train = pair_loader(
    "coco_2017_train",
    [L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
    ADV_DIR,
    "python tools/gen_adversarial.py --config-file "
    "configs/ikd/retinanet_R50_from_X101_coco_2x_offline.py model.teacher.weights=<teacher.pth>",
    batch=16,
    workers=4,
)
# 16 of 24 epochs = up to the first LR step of the 2x schedule (2/3 of 180k iterations).
train.hooks = [adversarial_window(end=120000)]
train.output_dir = "./output/ikd/retinanet_R50_from_X101_coco_2x_offline"
