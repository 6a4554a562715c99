# tiny_distill.py with HEAD (assistant + AKD + CKD) under a tiny Faster R-CNN teacher: 64 px
# crops, a 32-ch student FPN, a 32-ch teacher FPN with a 2 x 64 fc box head, 32 RoIs per image.
# The term is the synthetic recipe's, scaled down.
from detectron2.config import LazyCall as L

from d2kd.distill import LinearWarmup, Teacher

from ...configs.head.retinanet_R18_from_R18w_synth_akd_ckd import model as _synth
from ...configs.quickstart.models import faster_rcnn_synth
from .tiny_distill import dataloader, lr_multiplier, model, optimizer, train

model.teacher = L(Teacher)(model=faster_rcnn_synth(depth=18, fpn_channels=32, fc_dim=64))
model.terms = _synth.terms
model.terms.head.update(fc_dim=64, batch_size_per_image=32, pre_nms_topk=200, post_nms_topk=100)
model.weights = {
    "loss_akd": L(LinearWarmup)(weight=2.0, warmup_iters=4),
    "loss_ckd": L(LinearWarmup)(weight=2.0, warmup_iters=4),
}
