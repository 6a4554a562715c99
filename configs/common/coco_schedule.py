# COCO training pieces shared by the method recipes: data at 16 images per batch, SGD, a 2x
# schedule (24 epochs, LR x0.1 at epochs 16 and 22, 500-iteration linear warm-up: mmdet's 2x,
# which FGD, IKD and LSHFM's COCO runs use).
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from d2kd.engine.lr import warmup_multistep

from .optim import SGD as optimizer
from .train import train

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.total_batch_size = 16

train.max_iter = 180000  # 24 epochs of 118k images at batch 16 (~176k), rounded as Detectron2's 2x
train.eval_period = 10000
train.checkpointer.period = 10000
lr_multiplier = L(warmup_multistep)(
    max_iter="${train.max_iter}", steps=(16 / 24, 22 / 24), warmup_iters=500, warmup_factor=0.001
)
