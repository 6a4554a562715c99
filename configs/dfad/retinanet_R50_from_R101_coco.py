# DFAD on COCO: RetinaNet R50 (ImageNet init) learns from Detectron2's model-zoo RetinaNet R101
# without any COCO training image; evaluation on coco_2017_val (the real val set).
#   python tools/train_net.py --num-gpus 8 \
#       --config-file configs/dfad/retinanet_R50_from_R101_coco.py
#
# One iteration = 5 student SGD steps + 1 generator Adam step, each on 16 fresh 512x512
# generated images (2 per GPU on 8 GPUs). The paper has no detection setting: the budget and
# the schedule follow its 128 px Caltech/segmentation runs (300 "epochs" of 50 iterations, both
# learning rates x0.1 every 100 epochs).
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from d2kd.data import NoiseLoader
from d2kd.distill import Distiller, Teacher
from d2kd.distill.terms.dfad import DFADTerm
from d2kd.engine import DFADTrainer, GeneratorStep
from d2kd.engine.lr import warmup_multistep
from d2kd.modeling import GeneratorB

from ..common.coco_schedule import dataloader, optimizer, train
from ..common.models.retinanet_r101 import COCO_WEIGHTS
from ..common.models.retinanet_r101 import model as teacher

K = 5  # DFAD's 5 student steps per generator step

student = get_config("common/models/retinanet.py").model
model = L(Distiller)(
    student=student,
    teacher=L(Teacher)(model=teacher, weights=COCO_WEIGHTS),
    terms={"dfad": L(DFADTerm)()},  # class logits + box deltas over all anchors
    student_losses=False,
)
# Detectron2 students keep FrozenBN in the backbone, so generated images cannot shift its
# statistics; the student must start from ImageNet weights (DFAD's segmentation student started
# from scratch, with trainable BN).
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
dataloader.train = L(NoiseLoader)(
    total_batch_size=16,
    nz=256,
    draws=K + 1,
    seed="${train.seed}",
)
# COCO's test mapper read its format from the training mapper, which NoiseLoader replaced.
dataloader.test.mapper.image_format = "BGR"
train.trainer = L(DFADTrainer)(student_steps=K)
train.hooks = [
    L(GeneratorStep)(
        # 512x512 (multiple of 32: no FPN padding); 800x1333 is out of reach for 6 passes/iter
        generator=L(GeneratorB)(nz=256, ngf=64, img_size=512),
        lr=1e-3,
        lr_multiplier=L(warmup_multistep)(
            max_iter="${train.max_iter}", steps=(1 / 3, 2 / 3), warmup_iters=0
        ),
        form="log",
        dump_period=1000,
        dump_dir="${train.output_dir}/generator",
    )
]
train.max_iter = 15000  # 300 DFAD "epochs" x 50 iterations
train.eval_period = 5000
train.checkpointer.period = 1000
optimizer.lr = 0.01  # Detectron2's RetinaNet lr at 16 images per batch (DFAD: 0.1, from scratch)
lr_multiplier = L(warmup_multistep)(
    max_iter="${train.max_iter}", steps=(1 / 3, 2 / 3), warmup_iters=500, warmup_factor=0.001
)
train.output_dir = "./output/dfad/retinanet_R50_from_R101_coco"
