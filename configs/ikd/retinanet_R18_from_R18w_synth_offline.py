# IKD (FGD + adversarial feature augmentation + sample-specific augmentation) on the synthetic
# dataset, offline: the quickstart R18 student under the quickstart RetinaNet teacher, the FGD
# recipe plus IKD's parts for the high-LR phase, plain FGD afterwards, in one run.
#
# First make the adversarial copies of synth_train with this recipe's teacher (once per teacher):
#   python tools/gen_adversarial.py \
#       --config-file configs/ikd/retinanet_R18_from_R18w_synth_offline.py \
#       model.teacher.weights=$(python tools/quickstart.py --teacher-path)
# then train:
#   python tools/train_net.py \
#       --config-file configs/ikd/retinanet_R18_from_R18w_synth_offline.py \
#       model.teacher.weights=$(python tools/quickstart.py --teacher-path)
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import get_detection_dataset_dicts

from d2kd.data.adversarial import Attack
from d2kd.data.adversarial_mapper import (
    AdaptiveRelativeCrop,
    AdversarialPairMapper,
    build_adversarial_train_loader,
)
from d2kd.data.synthetic import cache_root
from d2kd.distill.schedule import Window
from d2kd.distill.terms.adversarial import AdversarialFeatureTerm
from d2kd.engine.adversarial import AdversarialAugmentation

from ..fgd.retinanet_R18_from_R18w_synth import dataloader, lr_multiplier, model, optimizer, train

GEN_COMMAND = (
    "python tools/gen_adversarial.py --config-file "
    "configs/ikd/retinanet_R18_from_R18w_synth_offline.py "
    "model.teacher.weights=$(python tools/quickstart.py --teacher-path)"
)

# The paper's attack (README + tools/ta_GT.py): DI-FGSM with momentum against the teacher's
# classification loss, eps 8 and step 2 (0-255 units), 5 steps, decay 1.0, diversity 0.5 at
# resize rate 0.9. tools/gen_adversarial.py reads it from here.
ikd = dict(
    attack=L(Attack)(
        method="difgsm", eps=8, step=2, steps=5, decay=1.0, diversity_prob=0.5, resize_rate=0.9
    ),
)

# The official DFA configs: AdvFeatureLoss (summed MSE / N) on P3-P7 at 1e-5 for RetinaNet.
model.terms["ikd_adv"] = L(AdversarialFeatureTerm)(levels=["p3", "p4", "p5", "p6", "p7"])
model.weights["ikd_adv"] = 1e-5

dataloader.train = L(build_adversarial_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synth_train"),
    mapper=L(AdversarialPairMapper)(
        # The synthetic images have one fixed size (no resize); IKD's adaptive crop, then the
        # recipe's flip, on both images of the pair with the same sampled parameters.
        augmentations=[
            L(AdaptiveRelativeCrop)(crop_size=(0.8, 0.8)),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        adv_dir=str(cache_root() / "ikd" / "synth_train_difgsm_eps8_step2_steps5"),
        adv_command=GEN_COMMAND,
        expected_settings=dict(method="difgsm", eps=8, step=2, steps=5),
        teacher_weights="${model.teacher.weights}",
        noise_prob=0.3,  # InstanceAug(prob=0.3), Gaussian noise severity 1
        small_size=32,  # "small" = area < 32 x 32 original pixels
    ),
    total_batch_size=8,
    num_workers=0,
    seed="${train.seed}",
)

# The paper runs DFA for the first 16 of 24 epochs, i.e. until the first LR step (the high-LR
# phase); this schedule's first LR step is at 0.75 x 1000 iterations.
# One Window for the whole switch: the hook hands this object to the term and to the mapper.
train.hooks = [L(AdversarialAugmentation)(window=L(Window)(start=0, end=750), term="ikd_adv")]
train.output_dir = "./output/ikd/retinanet_R18_from_R18w_synth_offline"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods"). The
# adversarial copy of synth_train is made before the first seed's run (restartable, and the
# seeds share it).
__benchmark__ = dict(
    name="ikd_offline",
    order=50,
    prepare=[
        "tools/gen_adversarial.py",
        "--config-file",
        "{recipe}",
        "--batch-size",
        "8",
        "model.teacher.weights={teacher}",
    ],
)
