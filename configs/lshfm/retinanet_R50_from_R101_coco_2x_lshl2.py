# LSHFM on COCO: RetinaNet R50-FPN <- RetinaNet R101-FPN, LSHL2 on the 3x3 patches of the cls
# tower (D = 2304; beta 7, 4096 hash functions, locations with a foreground anchor), the shared
# COCO 2x schedule. The official repository has no COCO recipe; its VOC values are used unchanged.
# Teacher weights: Detectron2's model zoo RetinaNet R101-FPN 3x (downloaded by the recipe).
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from d2kd.distill import Distiller, Teacher
from d2kd.distill.terms.mimic import RetinaNetMimicTerm

from ..common.coco_schedule import dataloader, lr_multiplier, optimizer, train
from ..common.models.retinanet_r101 import COCO_WEIGHTS
from ..common.models.retinanet_r101 import model as teacher

student = get_config("common/models/retinanet.py").model
model = L(Distiller)(
    student=student,
    teacher=L(Teacher)(model=teacher, weights=COCO_WEIGHTS),
    terms={"lshfm": L(RetinaNetMimicTerm)(mode="lshl2", beta=7.0, hash_num=4096, mask="fg")},
    weights={"lshfm": 1.0},
)
dataloader.train.mapper.use_instance_mask = False
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.clip_grad = dict(max_norm=35)  # no clip in the official code; a guard against LSH blow-ups
optimizer.lr = 0.01  # the RetinaNet lr at 16 images per batch
train.output_dir = "./output/lshfm/retinanet_R50_from_R101_coco_2x_lshl2"
