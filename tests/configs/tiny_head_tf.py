# TF-HEAD on tiny_head.py: no teacher; CKD regresses onto the student's own assistant fc7.
from ...configs.head._variants import tf_head
from .tiny_head import dataloader, lr_multiplier, model, optimizer, train

tf_head(model, warmup_iters=4)
