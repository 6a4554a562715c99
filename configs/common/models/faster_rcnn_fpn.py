# Faster R-CNN R50-FPN: Detectron2's Mask R-CNN node without its mask branch, i.e. the box-only
# detector of Detectron2's COCO-Detection model zoo (the two-stage students and teachers of the
# FGD, LSHFM and HEAD recipes).
from detectron2.model_zoo import get_config

model = get_config("common/models/mask_rcnn_fpn.py").model
model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
