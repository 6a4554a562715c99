# LSHFM on COCO: Faster R-CNN R50-FPN <- Faster R-CNN R101-FPN, LSHL2 on fc7 of the student's
# sampled RoIs (beta 7, 4096 hash functions), the shared COCO 2x schedule (16 images per batch).
# The official repository has no COCO recipe; its VOC values are used unchanged.
# Student, teacher and teacher weights (Detectron2's model zoo Faster R-CNN R101-FPN 3x) are FGD's
# two-stage COCO recipe's; only the KD term differs, and LSHFM starts from ImageNet weights alone.
from detectron2.config import LazyCall as L

from d2kd.distill.terms.mimic import RCNNMimicTerm

from ..fgd.faster_rcnn_R50_from_R101_coco_2x import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.terms = {"lshfm": L(RCNNMimicTerm)(mode="lshl2", beta=7.0, hash_num=4096, seed=0)}
model.weights = {"lshfm": 1.0}
model.init_student_from_teacher = False  # FGD's "inheriting" init is not part of LSHFM
dataloader.train.mapper.use_instance_mask = False
train.clip_grad = dict(max_norm=35)  # no clip in the official code; a guard against LSH blow-ups
train.ddp.find_unused_parameters = False  # every KD part is used (FGD's recipe needs True)
optimizer.lr = 0.02  # Detectron2's two-stage lr at 16 images per batch
train.output_dir = "./output/lshfm/faster_rcnn_R50_from_R101_coco_2x_lshl2"
