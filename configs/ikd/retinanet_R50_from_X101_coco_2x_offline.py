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
from detectron2.data import get_detection_dataset_dicts

from d2kd.data.adversarial import Attack
from d2kd.data.adversarial_mapper import (
    AdaptiveRelativeCrop,
    AdversarialPairMapper,
    build_adversarial_train_loader,
)
from d2kd.distill.schedule import Window
from d2kd.distill.terms.adversarial import AdversarialFeatureTerm
from d2kd.engine.adversarial import AdversarialAugmentation

from ..fgd.retinanet_R50_from_X101_coco_2x import dataloader, lr_multiplier, model, optimizer, train

# The paper's attack: DI-FGSM + momentum on the teacher's cls loss, eps 8, step 2, 5 steps,
# decay 1.0, diversity 0.5, resize rate 0.9 (README + tools/ta_GT.py); read by gen_adversarial.
ikd = dict(
    attack=L(Attack)(
        method="difgsm", eps=8, step=2, steps=5, decay=1.0, diversity_prob=0.5, resize_rate=0.9
    ),
)
ADV_DIR = os.path.join(
    os.getenv("DETECTRON2_DATASETS", "datasets"), "ikd", "coco_2017_train_difgsm_eps8_step2_steps5"
)

model.terms["ikd_adv"] = L(AdversarialFeatureTerm)(levels=["p3", "p4", "p5", "p6", "p7"])
model.weights = {"fgd": 1.0, "ikd_adv": 1e-5}  # 1e-5: the official DFA RetinaNet config

# The official DFA pipeline: single scale 1333x800 (the test scale, at which the copies are made),
# InstanceAug before the resize, RandomCrop(relative_range 0.8, adaptive) after it, then flip.
dataloader.train = L(build_adversarial_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train"),
    mapper=L(AdversarialPairMapper)(
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333),
            L(AdaptiveRelativeCrop)(crop_size=(0.8, 0.8)),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        adv_dir=ADV_DIR,
        adv_command=(
            "python tools/gen_adversarial.py --config-file "
            "configs/ikd/retinanet_R50_from_X101_coco_2x_offline.py "
            "model.teacher.weights=<teacher.pth>"
        ),
        expected_settings=dict(method="difgsm", eps=8, step=2, steps=5),
        teacher_weights="${model.teacher.weights}",
        noise_prob=0.3,
        small_size=32,
    ),
    total_batch_size=16,
    num_workers=4,  # the mapper learns each batch's iteration from the loader, in any worker
    seed="${train.seed}",
)
# 16 of 24 epochs = up to the first LR step of the 2x schedule (2/3 of 180k iterations).
# One Window for the whole switch: the hook hands this object to the term and to the mapper.
train.hooks = [L(AdversarialAugmentation)(window=L(Window)(start=0, end=120000), term="ikd_adv")]
train.output_dir = "./output/ikd/retinanet_R50_from_X101_coco_2x_offline"
