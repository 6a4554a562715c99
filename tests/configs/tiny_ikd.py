# tiny_fgd.py plus IKD: the paired mapper, the adversarial feature term and the hook, online mode
# (adversarial images made on the fly against the teacher: no folder needed). The window covers
# iterations [0, 2) of the 4.
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

from .tiny_fgd import dataloader, lr_multiplier, model, optimizer, train

model.terms["ikd_adv"] = L(AdversarialFeatureTerm)(levels=["p3", "p4", "p5"])
model.weights["ikd_adv"] = 1e-5
dataloader.train = L(build_adversarial_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_tiny_train"),
    mapper=L(AdversarialPairMapper)(
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=64, max_size=64),
            L(AdaptiveRelativeCrop)(crop_size=(0.8, 0.8)),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        adv_dir=None,
    ),
    total_batch_size=2,
    num_workers=0,
    seed="${train.seed}",
)
train.hooks = [
    L(AdversarialAugmentation)(
        window=L(Window)(start=0, end=2),
        term="ikd_adv",
        attack=L(Attack)(method="difgsm", eps=8, step=2, steps=2),
        fraction=0.5,
    )
]
