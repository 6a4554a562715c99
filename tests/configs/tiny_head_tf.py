# TF-HEAD on tiny_head.py: no teacher; CKD regresses onto the student's own assistant fc7.
from detectron2.config import LazyCall as L

from d2kd.distill.terms.head import CKDTerm, HEADAssistTerm
from d2kd.distill import LinearWarmup

from .tiny_head import dataloader, lr_multiplier, model, optimizer, train

model.teacher = None
model.terms = {
    "assist": L(HEADAssistTerm)(
        fc_dim=64, batch_size_per_image=32, pre_nms_topk=200, post_nms_topk=100
    ),
    "ckd": L(CKDTerm)(target="assistant", target_dim=64, per_anchor=True),
}
model.weights = {"assist": 1.0, "ckd": L(LinearWarmup)(weight=1.3, warmup_iters=4)}
