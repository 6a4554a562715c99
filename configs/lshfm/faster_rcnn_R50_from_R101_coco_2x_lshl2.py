# LSHFM on COCO: Faster R-CNN R50-FPN <- Faster R-CNN R101-FPN, LSHL2 on fc7 of the student's
# sampled RoIs (beta 7, 4096 hash functions), the shared COCO 2x schedule (16 images per batch).
# The official repository has no COCO recipe; its VOC values are used unchanged.
# Teacher weights: Detectron2's model zoo Faster R-CNN R101-FPN 3x (downloaded by the recipe).
import copy

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from d2kd.distill import Distiller, RCNNMimicTerm, Teacher

from ..common.coco_schedule import dataloader, lr_multiplier, optimizer, train

student = get_config("common/models/mask_rcnn_fpn.py").model
student.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
teacher = copy.deepcopy(student)
teacher.backbone.bottom_up.stages.depth = 101

model = L(Distiller)(
    student=student,
    teacher=L(Teacher)(
        model=teacher,
        weights=(
            "detectron2://COCO-Detection/faster_rcnn_R_101_FPN_3x/137851257/"
            "model_final_f6e8b1.pkl"
        ),
    ),
    terms={"lshfm": L(RCNNMimicTerm)(mode="lshl2", beta=7.0, hash_num=4096, seed=0)},
    weights={"lshfm": 1.0},
)
dataloader.train.mapper.use_instance_mask = False
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.clip_grad = dict(max_norm=35)  # no clip in the official code; a guard against LSH blow-ups
optimizer.lr = 0.02  # Detectron2's two-stage lr at 16 images per batch
train.output_dir = "./output/lshfm/faster_rcnn_R50_from_R101_coco_2x_lshl2"
