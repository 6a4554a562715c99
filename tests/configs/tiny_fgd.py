# tiny_distill.py with the FGD term instead of feature MSE.
from d2kd.distill.terms.fgd import FGDTerm
from detectron2.config import LazyCall as L

from .tiny_distill import dataloader, lr_multiplier, model, optimizer, train

model.terms = {"fgd": L(FGDTerm)(levels=["p3", "p4", "p5"])}
model.weights = {"fgd": 1.0}
