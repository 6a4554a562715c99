import torch
from detectron2.config import LazyCall as L
from detectron2.solver.build import get_default_optimizer_params

# SGD as in Detectron2; KD parts (adapters, context blocks) are trained by the same optimizer,
# with weight decay, as in the official FGD/HEAD code. The frozen teacher has no trainable params.
SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
)
