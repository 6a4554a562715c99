# tiny_distill.py with LSHFM's RetinaNet term (LSHL2 on the cls towers' 3x3 patches): the 32-ch
# student tower is adapted to the 64-ch teacher's by a 1x1 conv, so D = 9 x 64 = 576.
from detectron2.config import LazyCall as L

from d2kd.distill.terms.mimic import RetinaNetMimicTerm

from .tiny_distill import dataloader, lr_multiplier, model, optimizer, train

model.terms = {"lshfm": L(RetinaNetMimicTerm)(mode="lshl2", beta=7.0, hash_num=64)}
model.weights = {"lshfm": 1.0}
train.clip_grad = dict(max_norm=10)
