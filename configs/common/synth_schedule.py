# The synthetic recipes' schedule: batch 8 (configs/common/data/synthetic.py), SGD (optim.py),
# a 100-iteration linear warm-up, LR x0.1 at 75% and 90% of the run, one evaluation at the end.
from detectron2.config import LazyCall as L

from d2kd.engine.lr import warmup_multistep


def synth_schedule(train, max_iter: int, output_dir: str, checkpoint_period: int = 500):
    """Set ``train``'s length, evaluation, checkpoints and output folder in place; return the
    matching ``lr_multiplier`` node (steps as fractions of ``train.max_iter``, so an override of
    ``train.max_iter`` keeps the schedule's shape)."""
    train.max_iter = max_iter
    train.eval_period = max_iter
    train.checkpointer.period = checkpoint_period
    train.output_dir = output_dir
    return L(warmup_multistep)(max_iter="${train.max_iter}", steps=(0.75, 0.9), warmup_iters=100)
