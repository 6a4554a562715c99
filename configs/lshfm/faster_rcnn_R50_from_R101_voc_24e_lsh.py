# LSHFM's LSH row on VOC (the paper: 82.6 mAP@0.5); otherwise as
# faster_rcnn_R50_from_R101_voc_24e_lshl2.py.
from .faster_rcnn_R50_from_R101_voc_24e_lshl2 import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.terms["lshfm"].mode = "lsh"
train.output_dir = "./output/lshfm/faster_rcnn_R50_from_R101_voc_24e_lsh"
