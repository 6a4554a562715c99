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
from d2kd.data.synthetic import cache_root

from ..fgd.retinanet_R18_from_R18w_synth import dataloader, lr_multiplier, model, optimizer, train
from ._parts import add_adversarial_term, adversarial_window, pair_loader, paper_attack

GEN_COMMAND = (
    "python tools/gen_adversarial.py --config-file "
    "configs/ikd/retinanet_R18_from_R18w_synth_offline.py "
    "model.teacher.weights=$(python tools/quickstart.py --teacher-path)"
)

ikd = dict(attack=paper_attack())  # read by tools/gen_adversarial.py
add_adversarial_term(model, levels=["p3", "p4", "p5", "p6", "p7"])
# The synthetic images have one fixed size: no resize before IKD's crop and the flip.
adv_dir = str(cache_root() / "ikd" / "synth_train_difgsm_eps8_step2_steps5")
dataloader.train = pair_loader("synth_train", [], adv_dir, GEN_COMMAND, batch=8)

# The paper runs DFA for the first 16 of 24 epochs, i.e. until the first LR step (the high-LR
# phase); this schedule's first LR step is at 0.75 x 1000 iterations.
train.hooks = [adversarial_window(end=750)]
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
