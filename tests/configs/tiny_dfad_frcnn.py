# tiny_dfad.py with tiny Faster R-CNNs (R18, 32-ch vs 64-ch FPN): DFAD's RPN + RoI-head parts.
from detectron2.config import LazyCall as L

from d2kd.distill.terms.dfad import DFADTerm

from ...configs.quickstart.models import faster_rcnn_synth
from .tiny_dfad import dataloader, lr_multiplier, model, optimizer, train

model.student = faster_rcnn_synth(depth=18, fpn_channels=32, fc_dim=64)
model.teacher.model = faster_rcnn_synth(depth=18, fpn_channels=64, fc_dim=128)
model.terms = {"dfad": L(DFADTerm)(features=["p3"], roi_boxes_per_image=16)}
