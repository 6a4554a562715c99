# A plain recipe (baseline student): cfg.model is the stock Faster R-CNN itself.
from .recipe_base import dataloader, tiny_faster_rcnn, train  # noqa: F401

model = tiny_faster_rcnn()
