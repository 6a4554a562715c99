# The Faster R-CNN R101-FPN teacher of LSHFM's VOC rows, trained alone (a plain Detectron2 recipe):
# Detectron2's model zoo has no VOC R101 detector. Its data and schedule are LSHFM's VOC setting
# (experiments/*.sh of the official code), shared by every VOC recipe in this folder:
#   train VOC07+12 trainval (16551 images), test VOC07 test, PascalVOCDetectionEvaluator (mAP@0.5);
#   8 images per batch (4 GPUs x 2), SGD lr 0.01, 24 epochs = 49653 iterations, x0.1 at epochs
#   18 and 22, 1000-iteration linear warm-up from 0.001; shorter side in {480, 512, ..., 800},
#   longer side at most 1333.
#   python tools/train_net.py --num-gpus 4 \
#       --config-file configs/lshfm/faster_rcnn_R101_voc_24e_teacher.py
from detectron2.config import LazyCall as L
from detectron2.data import transforms as T
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.model_zoo import get_config

from d2kd.engine.lr import warmup_multistep

from ..common.models.faster_rcnn_fpn import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.roi_heads.num_classes = 20
model.backbone.bottom_up.stages.depth = 101
# torchvision's RPN (the official code) keeps 4000 / 2000 boxes per level before NMS.
model.proposal_generator.pre_nms_topk = (4000, 2000)

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.dataset.names = ("voc_2007_trainval", "voc_2012_trainval")
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations[0] = L(T.ResizeShortestEdge)(
    short_edge_length=tuple(range(480, 801, 32)), sample_style="choice", max_size=1333
)
dataloader.train.total_batch_size = 8
dataloader.test.dataset.names = "voc_2007_test"
dataloader.evaluator = L(PascalVOCDetectionEvaluator)(dataset_name="${..test.dataset.names}")

optimizer.lr = 0.01  # the official Faster R-CNN lr at 8 images per batch
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
train.max_iter = 49653  # 24 epochs of 16551 images at batch 8
train.eval_period = 10000
train.checkpointer.period = 10000
lr_multiplier = L(warmup_multistep)(
    max_iter="${train.max_iter}", steps=(18 / 24, 22 / 24), warmup_iters=1000, warmup_factor=0.001
)
train.output_dir = "./output/lshfm/faster_rcnn_R101_voc_24e_teacher"
