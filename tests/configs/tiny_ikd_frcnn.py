# A narrow Faster R-CNN R18 (the quickstart two-stage family) to test attacks on two-stage teachers.
from ...configs.quickstart.models import faster_rcnn_synth
from .tiny_ikd import dataloader, lr_multiplier, optimizer, train

model = faster_rcnn_synth(depth=18, fpn_channels=32, fc_dim=64)
