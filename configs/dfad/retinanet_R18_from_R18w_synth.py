# DFAD on the embedded synthetic dataset: the quickstart R18 student (128-ch FPN, 2 x 128 head)
# learns from the quickstart RetinaNet teacher (R18, 256-ch FPN, 4 x 256 head; the issue asked
# for R50, but an R50 trained from scratch here ended below the student, see
# configs/quickstart/retinanet_R18w_teacher.py) WITHOUT seeing any training image: a generator
# makes its images from noise. The teacher was trained on synth_train; evaluation is on synth_val.
#   python tools/train_net.py --config-file configs/dfad/retinanet_R18_from_R18w_synth.py \
#       model.teacher.weights=$(python tools/quickstart.py --teacher-path)
#
# One iteration = K student SGD steps (each on BATCH fresh generated images) + 1 generator Adam
# step (BATCH images, through both frozen models): 2K+2 detector forwards, K+1 backwards.
from detectron2.config import LazyCall as L

from d2kd.data import NoiseLoader
from d2kd.distill.terms.dfad import DFADTerm
from d2kd.distill import Distiller, Teacher
from d2kd.engine import DFADTrainer, GeneratorStep
from d2kd.engine.lr import warmup_multistep
from d2kd.modeling import GeneratorB

from ..common.data.synthetic import dataloader
from ..common.optim import SGD as optimizer
from ..common.train import train
from ..quickstart.models import student_model, teacher_model

K = 2  # student steps per generator step (DFAD: 5); 2 keeps an iteration near FGD's CPU cost
BATCH = 4  # images per step; the generator's BatchNorm needs >= 4 (DFAD: 64 at 128 px)
NZ = 256  # noise size of DFAD's GeneratorB runs

model = L(Distiller)(
    student=student_model,
    teacher=L(Teacher)(
        model=teacher_model,
        # The teacher trained by configs/quickstart/retinanet_R18w_teacher.py
        # (`python tools/quickstart.py --teacher-path` prints where it is cached).
        weights="",
    ),
    terms={"dfad": L(DFADTerm)()},  # mean L1 of class logits + box deltas over all anchors
    student_losses=False,  # no GT: the DFAD term is the student's only loss
)
# The training "data" is noise: K + 1 draws of BATCH vectors per iteration; no image is read.
dataloader.train = L(NoiseLoader)(
    total_batch_size=BATCH,
    nz=NZ,
    draws=K + 1,
    seed="${train.seed}",
)
train.trainer = L(DFADTrainer)(student_steps=K)
train.hooks = [
    L(GeneratorStep)(
        # 128 px RGB, the synthetic images' size; ngf 32 (DFAD: 64) quarters the generator's cost
        generator=L(GeneratorB)(nz=NZ, ngf=32, img_size=128),
        lr=1e-3,  # Adam, default betas, as the official code
        # the student's step decay applied to the generator too, as the official scripts
        lr_multiplier=L(warmup_multistep)(
            max_iter="${train.max_iter}", steps=(0.75, 0.9), warmup_iters=0
        ),
        form="log",  # -log(1 + L1): DFAD's form for dense outputs
        dump_period=100,  # images of a fixed noise batch for `tools/visualize.py generator`
        dump_dir="${train.output_dir}/generator",
    )
]
train.max_iter = 1000  # the synthetic students' schedule, counted in DFAD iterations
train.eval_period = 1000
train.checkpointer.period = 500
optimizer.lr = 0.02  # the synthetic students' SGD (momentum 0.9, wd 1e-4)
lr_multiplier = L(warmup_multistep)(
    max_iter="${train.max_iter}", steps=(0.75, 0.9), warmup_iters=100
)
train.output_dir = "./output/dfad/retinanet_R18_from_R18w_synth"

# This recipe's row in the benchmarks (its order: benchmarks/README.md, "Methods").
__benchmark__ = dict(name="dfad", order=60)
