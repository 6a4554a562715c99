"""DFAD's classic case, on CPU in minutes: is the adversarial loop right?

``tools/dfad_sanity.py`` is its command line. :func:`run`:

1. renders MNIST-like digits (``d2kd.data.digits``), trains a LeNet-5 teacher on them (with
   BatchNorm after each layer when ``bn=True``, so its statistics can serve as an image prior);
2. trains a LeNet-5-half student data-free, as DFAD's MNIST script: per iteration ``k = 5``
   student SGD steps (lr 0.01, momentum 0.9, wd 1e-4) on ``G(z).detach()`` minimising
   ``mean|S - T|`` of the logits, then one Adam step (1e-3) of GeneratorA maximising it
   (``-L1``, the classification form) plus, with ``bn_prior > 0``, the teacher's BatchNorm
   statistics prior (:func:`d2kd.losses.discrepancy.bn_statistics_loss`); fresh
   ``z ~ N(0, I)`` (nz 100) for every step;
3. reports the teacher's and the last student's accuracy on held-out rendered digits (never
   seen by the student), a randomly initialised student's, and the best accuracy over the
   periodic evaluations (what the official script reports: model selection on the test set).

The losses, the BN recorder and the buffer handling are d2kd's; only the models are
classifiers here.
"""
import json
import time
from contextlib import nullcontext
from typing import Dict, List, Sequence

import torch
from torch import nn

from ..data.digits import DIGITS_MEAN, DIGITS_STD, render_digits
from ..distill.taps import BatchNormInputStats
from ..losses.discrepancy import bn_statistics_loss, generator_loss, mean_l1
from ..modeling.generator import GeneratorA
from .dfad import preserved_buffers

__all__ = ["lenet5", "train_teacher", "dfad", "run"]


def lenet5(width: float = 1.0, bn: bool = False) -> nn.Module:
    """LeNet-5 on 1x32x32 inputs; ``width=0.5`` is DFAD's LeNet-5-half student; ``bn`` adds
    BatchNorm after each conv and hidden linear layer."""
    c1, c2, f1, f2 = (max(1, int(round(c * width))) for c in (6, 16, 120, 84))

    def norm(c: int, two_d: bool) -> nn.Module:
        if not bn:
            return nn.Identity()
        return nn.BatchNorm2d(c) if two_d else nn.BatchNorm1d(c)

    return nn.Sequential(
        nn.Conv2d(1, c1, 5), norm(c1, True), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5), norm(c2, True), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 25, f1), norm(f1, False), nn.ReLU(),
        nn.Linear(f1, f2), norm(f2, False), nn.ReLU(), nn.Linear(f2, 10),
    )  # fmt: skip


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - DIGITS_MEAN) / DIGITS_STD


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(
        int((model(normalise(xb)).argmax(1) == yb).sum())
        for xb, yb in zip(x.split(1000), y.split(1000))
    )
    return correct / len(x)


def train_teacher(
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int = 3,
    batch: int = 64,
    seed: int = 0,
    bn: bool = False,
) -> nn.Module:
    """Supervised LeNet-5 on the rendered digits (Adam 1e-3, cross-entropy)."""
    torch.manual_seed(seed)
    model = lenet5(1.0, bn=bn)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            loss = nn.functional.cross_entropy(model(normalise(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def dfad(
    teacher: nn.Module,
    student: nn.Module,
    generator: nn.Module,
    iters: int,
    batch: int,
    student_steps: int = 5,
    lr_s: float = 0.01,
    lr_g: float = 1e-3,
    form: str = "neg",
    seed: int = 0,
    eval_every: int = 0,
    evaluate=None,
    milestones: Sequence[float] = (),
    bn_prior: float = 0.0,
) -> List[Dict[str, float]]:
    """DFAD's loop on classifiers; returns the evaluation history ``[{iter, acc}]``.

    ``milestones``: fractions of ``iters`` at which both learning rates drop x0.1 (the official
    scripts' optional step decay, applied to the student and the generator alike).
    ``bn_prior``: weight of the teacher's BatchNorm statistics prior in the generator's loss.
    """
    stats = BatchNormInputStats(teacher, owner="dfad_sanity") if bn_prior > 0 else None
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    opt_s = torch.optim.SGD(student.parameters(), lr=lr_s, momentum=0.9, weight_decay=1e-4)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr_g)
    steps = sorted({int(round(f * iters)) for f in milestones})
    decays = [torch.optim.lr_scheduler.MultiStepLR(o, steps, 0.1) for o in (opt_s, opt_g)]
    gen = torch.Generator().manual_seed(seed)
    history = []
    for it in range(iters):
        student.train()
        generator.train()
        for _ in range(student_steps):
            z = torch.randn(batch, generator.nz, generator=gen)
            with torch.no_grad(), preserved_buffers(generator):
                x = generator(z)
                t = teacher(x)
            loss_s = mean_l1(student(x), t)
            opt_s.zero_grad()
            loss_s.backward()
            opt_s.step()
        z = torch.randn(batch, generator.nz, generator=gen)
        params = list(generator.parameters())
        with preserved_buffers(student):
            x = generator(z)
            with stats or nullcontext():
                t = teacher(x)
            loss_g = generator_loss(mean_l1(student(x), t), form)
            if stats is not None:
                loss_g = loss_g + bn_prior * bn_statistics_loss(*stats.lists())
            opt_g.zero_grad()
            loss_g.backward(inputs=params)
        opt_g.step()
        for decay in decays:
            decay.step()
        if evaluate is not None and eval_every and ((it + 1) % eval_every == 0 or it + 1 == iters):
            history.append(
                {"iter": it + 1, "acc": evaluate(student), "loss_s": float(loss_s.detach())}
            )
            print(json.dumps(history[-1]), flush=True)
    return history


def run(
    iters: int = 200,
    batch: int = 256,
    n_train: int = 6000,
    n_test: int = 2000,
    teacher_epochs: int = 3,
    ngf: int = 64,
    lr_s: float = 0.01,
    lr_g: float = 1e-3,
    student_steps: int = 5,
    form: str = "neg",
    seed: int = 0,
    eval_every: int = 0,
    milestones: Sequence[float] = (),
    bn: bool = False,
    bn_prior: float = 0.0,
) -> Dict[str, float]:
    """The whole sanity case; returns accuracies (teacher, random student, DFAD student)."""
    start = time.perf_counter()
    x_train, y_train = render_digits(n_train, seed=seed)
    x_test, y_test = render_digits(n_test, seed=seed + 10_000)
    teacher = train_teacher(x_train, y_train, epochs=teacher_epochs, seed=seed, bn=bn)
    torch.manual_seed(seed + 1)
    student = lenet5(0.5)
    generator = GeneratorA(nz=100, ngf=ngf, img_size=32, nc=1)
    result = {"acc_teacher": accuracy(teacher, x_test, y_test)}
    result["acc_random_student"] = accuracy(student, x_test, y_test)
    t0 = time.perf_counter()
    history = dfad(
        teacher, student, generator, iters, batch, student_steps=student_steps, lr_s=lr_s,
        lr_g=lr_g, form=form, seed=seed, milestones=milestones, bn_prior=bn_prior,
        eval_every=eval_every,
        evaluate=lambda s: accuracy(s, x_test, y_test),
    )  # fmt: skip
    result["acc_dfad_student"] = accuracy(student, x_test, y_test)
    # The official script keeps the best test accuracy over its evaluations (model selection on
    # the test set): reported separately, never as the result.
    result["acc_dfad_best_evaluated"] = max([h["acc"] for h in history], default=float("nan"))
    result["dfad_seconds"] = time.perf_counter() - t0
    result["total_seconds"] = time.perf_counter() - start
    result["history"] = history
    return result
