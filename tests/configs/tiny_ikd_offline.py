# tiny_ikd.py in offline mode: the adversarial copies come from a folder made by
# tools/gen_adversarial.py (tests set dataloader.train.mapper.adv_dir to a temporary one).
from .tiny_ikd import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.mapper.adv_dir = ""
train.hooks[0].attack = None
