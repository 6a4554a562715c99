# tiny_fgd.py plus IKD: the paired mapper, the adversarial feature term and the hook, online mode
# (adversarial images made on the fly against the teacher: no folder needed). The window covers
# iterations [0, 2) of the 4.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from ...configs.ikd._parts import (
    add_adversarial_term,
    adversarial_window,
    pair_loader,
    paper_attack,
)
from .tiny_fgd import dataloader, lr_multiplier, model, optimizer, train

add_adversarial_term(model, levels=["p3", "p4", "p5"])
resize = [L(T.ResizeShortestEdge)(short_edge_length=64, max_size=64)]
dataloader.train = pair_loader("synth_tiny_train", resize, None, None, batch=2, attack_steps=2)
train.hooks = [adversarial_window(end=2, attack=paper_attack(steps=2), fraction=0.5)]
