# A seconds-scale DFAD recipe for tests: the tiny RetinaNets of tiny_distill.py, a 64 px
# generator (ngf 8), 2 student steps per generator step, batches of 2 noise vectors.
from detectron2.config import LazyCall as L

from d2kd.data import NoiseLoader
from d2kd.distill.terms.dfad import DFADTerm
from d2kd.engine import DFADTrainer, GeneratorStep
from d2kd.modeling import GeneratorB

from .tiny_distill import dataloader, lr_multiplier, model, optimizer, train

model.terms = {"dfad": L(DFADTerm)()}
model.weights = {}
model.student_losses = False
dataloader.train = L(NoiseLoader)(total_batch_size=2, nz=16, draws=3, seed="${train.seed}")
train.trainer = L(DFADTrainer)(student_steps=2)
train.hooks = [
    L(GeneratorStep)(
        generator=L(GeneratorB)(nz=16, ngf=8, img_size=64),
        dump_period=2,
        dump_dir="${train.output_dir}/generator",
    )
]
