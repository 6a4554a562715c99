# IKD's recipe parts, shared by the synthetic, COCO and test recipes (a helper module, not a
# recipe: tests skip files starting "_").
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


def paper_attack(steps: int = 5):
    """The paper's attack (README + tools/ta_GT.py): DI-FGSM with momentum against the teacher's
    classification loss, eps 8 and step 2 (0-255 units), decay 1.0, diversity 0.5 at resize
    rate 0.9; tools/gen_adversarial.py reads it from a recipe's ``ikd.attack``."""
    return L(Attack)(
        method="difgsm", eps=8, step=2, steps=steps, decay=1.0, diversity_prob=0.5, resize_rate=0.9
    )


def add_adversarial_term(model, levels, weight: float = 1e-5) -> None:
    """The official DFA configs' AdvFeatureLoss (summed MSE / N), 1e-5 for RetinaNet."""
    model.terms["ikd_adv"] = L(AdversarialFeatureTerm)(levels=list(levels))
    model.weights = {**(model.get("weights", None) or {}), "ikd_adv": weight}


def pair_loader(names, resize, adv_dir, adv_command, batch, workers=0, attack_steps=5):
    """The adversarial pair loader: ``resize`` (a list of augmentations before the crop, e.g.
    the test-scale resize the copies were made at), IKD's adaptive crop and the flip, applied to
    both images of a pair with the same sampled parameters; InstanceAug noise (prob 0.3,
    severity 1) on "small" objects (area < 32 x 32 original pixels)."""
    return L(build_adversarial_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names=names),
        mapper=L(AdversarialPairMapper)(
            augmentations=[
                *resize,
                L(AdaptiveRelativeCrop)(crop_size=(0.8, 0.8)),
                L(T.RandomFlip)(horizontal=True),
            ],
            image_format="BGR",
            adv_dir=adv_dir,
            adv_command=adv_command,
            expected_settings=dict(method="difgsm", eps=8, step=2, steps=attack_steps),
            teacher_weights="${model.teacher.weights}",
            noise_prob=0.3,
            small_size=32,
        ),
        total_batch_size=batch,
        num_workers=workers,  # the mapper learns each batch's iteration from the loader
        seed="${train.seed}",
    )


def adversarial_window(end: int, **hook_args):
    """The hook, with one Window for the whole switch (the hook hands it to term and mapper)."""
    return L(AdversarialAugmentation)(
        window=L(Window)(start=0, end=end), term="ikd_adv", **hook_args
    )


def make_online(dataloader, train, attack) -> None:
    """The online variant, in place: no stored copies; the hook attacks the teacher for every
    image of every batch, every iteration (the offline recipe's data, made during training)."""
    dataloader.train.mapper.adv_dir = None  # the mapper still applies the sample-specific augs
    train.hooks[0].attack = attack
    train.hooks[0].fraction = 1.0
    train.hooks[0].regenerate_every = 1
