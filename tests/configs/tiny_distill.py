# A seconds-scale Distiller recipe for tests: ResNet-18 RetinaNets with narrow heads on 64 px
# crops of the tiny synthetic split; the student's FPN is narrower than the teacher's, so the
# feature-MSE term needs its adapters.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from d2kd.distill import Distiller, Teacher
from d2kd.distill.terms.feature_mse import FeatureMSETerm

from ...configs.common.data.synthetic import dataloader
from ...configs.common.optim import SGD as optimizer
from ...configs.common.train import train
from ...configs.quickstart.models import retinanet_synth
from ...configs.quickstart.retinanet_R18_baseline import lr_multiplier

student = retinanet_synth(depth=18, fpn_channels=32, head_convs=1)
model = L(Distiller)(
    student=student,
    teacher=L(Teacher)(model=retinanet_synth(depth=18, fpn_channels=64, head_convs=1), weights=""),
    terms={"mse": L(FeatureMSETerm)(levels=["p3", "p4", "p5"])},
    weights={"mse": 0.5},
)
dataloader.train.dataset.names = "synth_tiny_train"
dataloader.train.total_batch_size = 2
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=64, max_size=64),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.test.dataset.names = "synth_tiny_val"
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=64, max_size=64)]
train.device = "cpu"
train.max_iter = 4
train.eval_period = 0
train.log_period = 1
train.checkpointer.period = 2
train.teacher_check.num_images = 0  # tests distil from random teachers, which the check refuses
optimizer.lr = 0.01
