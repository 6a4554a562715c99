# The tiny teacher of tiny_distill.py as a plain Detectron2 recipe (trains teachers in tests).
from .tiny_distill import dataloader, lr_multiplier, optimizer, train
from .tiny_distill import model as _distiller

model = _distiller.teacher.model
