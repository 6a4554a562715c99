"""Data-free adversarial distillation's training loop (Fang et al., arXiv 1912.11006).

One trainer iteration ("DFAD iteration") is what the official loop does per step:

1. ``k`` student steps (default 5), each on a fresh noise batch: ``x = G(z)`` without gradient,
   the Distiller's DFAD term gives ``mean|S(x) - T(x)|`` (teacher under ``no_grad``), one SGD
   step of the student;
2. one generator step on fresh noise: ``x = G(z)`` with gradient, ``-log(1 + mean|S(x) - T(x)|)``
   differentiated through the frozen student and teacher w.r.t. the images only, one Adam step
   of the generator.

The training "data" is noise from :class:`d2kd.data.NoiseLoader` (``k + 1`` draws per
iteration); no real image is read. The generator, its Adam optimizer and the schedule live in
the :class:`GeneratorStep` hook, whose state is checkpointed with the trainer and restored by
``--resume``. Each step changes only its own model: BatchNorm running statistics of the model
that is not being trained are restored after its forward.
"""

import logging
import os
import time
from contextlib import contextmanager, nullcontext
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from detectron2.engine import HookBase, SimpleTrainer
from detectron2.utils import comm
from fvcore.common.param_scheduler import ParamScheduler
from torch import Tensor, nn

from ..distill.terms.dfad import DFADTerm
from ..distill.distiller import Distiller
from ..distill.taps import BatchNormInputStats
from ..losses.discrepancy import bn_statistics_loss, generator_loss
from ..modeling.generator import generated_inputs
from .checkpoint import unwrap_ddp

__all__ = ["GeneratorStep", "DFADTrainer", "preserved_buffers"]

logger = logging.getLogger("d2kd")


@contextmanager
def preserved_buffers(module: nn.Module) -> Iterator[None]:
    """Run a train-mode forward (batch statistics) without changing ``module``'s buffers.

    BatchNorm in train mode normalises with the batch's statistics and updates its running
    statistics; inside this context the update is undone afterwards, so a model that is only
    a function of the batch in this step (the student in the generator step, the generator in a
    student step) keeps its state.
    """
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


class GeneratorStep(HookBase):
    """DFAD's generator: makes the student's images and takes the adversarial step.

    Used by :class:`DFADTrainer`, which calls :meth:`generate` for every student step and
    :meth:`step` once per iteration. The Adam learning rate is ``lr * lr_multiplier(iter /
    max_iter)``, a function of the iteration, so it needs no state of its own on resume.

    Args:
        generator: the generator (e.g. :class:`d2kd.modeling.GeneratorB`) with attribute ``nz``.
        lr: Adam learning rate (official 1e-3); betas: Adam betas (official defaults).
        lr_multiplier: an fvcore ParamScheduler of ``iter / max_iter`` (the official code decays
            the generator with the student's step schedule); None keeps ``lr``.
        form: "log" (``-log(1 + d)``, DFAD's dense/segmentation form) or "neg" (``-d``).
        bn_prior: weight of the image prior added to the generator's loss: the distance between
            the batch statistics of the generated images at every BatchNorm layer of the frozen
            teacher and the layer's running statistics (DeepInversion, DIODE;
            :func:`d2kd.losses.discrepancy.bn_statistics_loss`). 0 (DFAD's loop) turns it off; a
            positive weight with a teacher without trained BatchNorm stops before training.
        term: name of the Distiller's :class:`DFADTerm`.
        dump_period: every this many iterations (0: never) write ``dump_count`` images of a
            fixed noise batch to ``<dump_dir>/iter_<N>.pt`` as uint8 RGB (N, 3, H, W), for
            ``tools/visualize.py generator``.
        dump_dir: where to write them (e.g. ``"${train.output_dir}/generator"``).
        dump_count: images per dump.
    """

    def __init__(
        self,
        generator: nn.Module,
        lr: float = 1e-3,
        betas: Tuple[float, float] = (0.9, 0.999),
        lr_multiplier: Optional[ParamScheduler] = None,
        form: str = "log",
        bn_prior: float = 0.0,
        term: str = "dfad",
        dump_period: int = 0,
        dump_dir: str = "",
        dump_count: int = 16,
    ):
        if form not in ("log", "neg"):
            raise ValueError(f"[GeneratorStep] form must be 'log' or 'neg', got {form!r}")
        if not hasattr(generator, "nz"):
            raise TypeError(f"[GeneratorStep] {type(generator).__name__} has no `nz` attribute")
        if dump_period and not dump_dir:
            raise ValueError("[GeneratorStep] dump_period > 0 needs a dump_dir")
        self.generator = generator
        self.base_lr = float(lr)
        self.optimizer = torch.optim.Adam(generator.parameters(), lr=lr, betas=tuple(betas))
        self.lr_multiplier = lr_multiplier
        self.form = form
        if bn_prior < 0:
            raise ValueError(f"[GeneratorStep] bn_prior must be >= 0, got {bn_prior}")
        self.bn_prior = float(bn_prior)
        self._bn_stats: Optional[BatchNormInputStats] = None
        self.term_name = term
        self.dump_period, self.dump_dir, self.dump_count = int(dump_period), dump_dir, dump_count
        self._device: Optional[torch.device] = None

    # -- wiring -----------------------------------------------------------------------------
    def _parts(self) -> Tuple[nn.Module, nn.Module, DFADTerm]:
        model = unwrap_ddp(self.trainer.model)
        if not isinstance(model, Distiller) or model.teacher is None:
            raise TypeError(
                "[GeneratorStep] the trained model must be a Distiller with a teacher, got "
                f"{type(model).__name__}"
            )
        term = model.terms[self.term_name] if self.term_name in model.terms else None
        if not isinstance(term, DFADTerm):
            raise KeyError(
                f"[GeneratorStep] the Distiller has no DFADTerm named '{self.term_name}'; "
                f"terms: {list(model.terms)}"
            )
        return model.student, model.teacher_model, term

    def _to_device(self) -> None:
        device = next(unwrap_ddp(self.trainer.model).parameters()).device
        if self._device != device:
            self.generator.to(device)  # keeps Parameter identity: the optimizer stays valid
            self._device = device

    def before_train(self) -> None:
        self._to_device()
        if self.bn_prior > 0:
            _, teacher, _ = self._parts()
            self._bn_stats = BatchNormInputStats(teacher, owner="GeneratorStep")
        if comm.get_world_size() > 1:  # one generator for all ranks (seeds differ per rank)
            with torch.no_grad():
                for t in list(self.generator.parameters()) + list(self.generator.buffers()):
                    torch.distributed.broadcast(t, src=0)

    # -- the two uses per iteration ------------------------------------------------------------
    def generate(self, z: Tensor) -> List[Dict]:
        """Student-step images: ``G(z)`` without gradient, as the student's batched inputs."""
        self._to_device()
        student, _, _ = self._parts()
        self.generator.train()  # batch statistics, as the official loop (G stays in train mode)
        with torch.no_grad(), preserved_buffers(self.generator):
            images = self.generator(z.to(self._device))
        return generated_inputs(images, student.input_format)

    def current_lr(self, iteration: int) -> float:
        if self.lr_multiplier is None:
            return self.base_lr
        max_iter = max(int(getattr(self.trainer, "max_iter", 1) or 1), 1)
        return self.base_lr * float(self.lr_multiplier(min(iteration / max_iter, 1.0 - 1e-9)))

    def step(self, z: Tensor, iteration: int) -> Dict[str, float]:
        """One adversarial step: the generator maximises the student-teacher discrepancy.

        Gradients reach the generator through both frozen models; neither model's parameters
        get a gradient (``backward(inputs=generator params)``) and the student's BatchNorm
        running statistics are restored, so only the generator changes.

        Returns:
            scalars to log: the discrepancy, the generator loss and its learning rate.
        """
        self._to_device()
        student, teacher, term = self._parts()
        if self.bn_prior > 0 and self._bn_stats is None:
            self._bn_stats = BatchNormInputStats(teacher, owner="GeneratorStep")
        lr = self.current_lr(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.generator.train()
        params = [p for p in self.generator.parameters() if p.requires_grad]
        # BatchNorm's backward reads the running statistics: restore them after it.
        with preserved_buffers(student):
            images = self.generator(z.to(self._device))
            inputs = generated_inputs(images, student.input_format)
            with self._bn_stats or nullcontext():
                parts = term.discrepancy(student, teacher, inputs, teacher_grad=True)
            discrepancy = sum(parts.values())
            loss = generator_loss(discrepancy, self.form)
            prior = None
            if self._bn_stats is not None:
                prior = bn_statistics_loss(*self._bn_stats.lists())
                loss = loss + self.bn_prior * prior
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=params)
        world = comm.get_world_size()
        if world > 1:
            for p in params:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad.div_(world)
        self.optimizer.step()
        scalars = {
            "dfad/discrepancy": float(discrepancy.detach()),
            "dfad/loss_generator": float(loss.detach()),
            "dfad/lr_generator": lr,
        }
        if prior is not None:
            scalars["dfad/bn_prior"] = float(prior.detach())
        return scalars

    # -- dumps and checkpoints ------------------------------------------------------------------
    def after_step(self) -> None:
        it = self.trainer.iter + 1
        if self.dump_period and it % self.dump_period == 0 and comm.is_main_process():
            self.dump(it)

    def dump(self, iteration: int) -> str:
        """Write ``dump_count`` images of a fixed noise batch (uint8 RGB) for visualisation."""
        z = torch.randn(
            self.dump_count, self.generator.nz, generator=torch.Generator().manual_seed(0)
        )
        self.generator.train()  # batch statistics, as the images the student sees
        with torch.no_grad(), preserved_buffers(self.generator):
            images = self.generator(z.to(self._device or "cpu"))
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        os.makedirs(self.dump_dir, exist_ok=True)
        path = os.path.join(self.dump_dir, f"iter_{iteration:07d}.pt")
        torch.save({"iteration": iteration, "images": pixels}, path)
        return path

    def state_dict(self) -> Dict:
        return {"generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Dict) -> None:
        for key in ("generator", "optimizer"):
            if key not in state:
                raise KeyError(f"[GeneratorStep] checkpoint state has no '{key}'")
        if getattr(self, "trainer", None) is not None:
            self._to_device()
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        logger.info("[GeneratorStep] restored the generator and its optimizer")


class DFADTrainer(SimpleTrainer):
    """SimpleTrainer whose step is one DFAD iteration: ``student_steps`` student updates on
    generated images, then one generator update (see the module docstring).

    The data loader must yield noise of shape (student_steps + 1, B, nz) per iteration
    (:class:`d2kd.data.NoiseLoader` with ``draws = student_steps + 1``); the model is a
    ``Distiller(student_losses=False)`` with a :class:`DFADTerm`; ``train.hooks`` holds a
    :class:`GeneratorStep`. Hooks' ``after_backward`` (gradient clipping) runs after every
    student backward. Logged: the last student step's losses and the generator's scalars.

    Args:
        model, data_loader, optimizer: as SimpleTrainer (given by ``do_train``).
        student_steps: student updates per iteration (DFAD: 5).
    """

    def __init__(self, model, data_loader, optimizer, student_steps: int = 5, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        if student_steps < 1:
            raise ValueError(f"[DFADTrainer] student_steps must be >= 1, got {student_steps}")
        self.student_steps = int(student_steps)

    @property
    def generator_hook(self) -> GeneratorStep:
        for h in self._hooks:
            if isinstance(h, GeneratorStep):
                return h
        raise KeyError("[DFADTrainer] no GeneratorStep hook: add one to train.hooks")

    def run_step(self) -> None:
        assert self.model.training, "[DFADTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        noise = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if not isinstance(noise, Tensor) or noise.dim() != 3:
            raise TypeError(
                "[DFADTrainer] the data loader must yield noise (draws, B, nz) (a NoiseLoader), "
                f"got {type(noise).__name__}"
            )
        if noise.shape[0] != self.student_steps + 1:
            raise ValueError(
                f"[DFADTrainer] noise has {noise.shape[0]} draws per iteration, expected "
                f"student_steps + 1 = {self.student_steps + 1} (set dataloader.train.draws)"
            )
        hook = self.generator_hook
        for z in noise[: self.student_steps]:
            loss_dict = self.model(hook.generate(z))
            losses = sum(loss_dict.values())
            self.optimizer.zero_grad()
            losses.backward()
            self.after_backward()
            self.optimizer.step()
        scalars = hook.step(noise[self.student_steps], self.iter)
        self._write_metrics(loss_dict, data_time)
        if comm.is_main_process():
            self.storage.put_scalars(**scalars, smoothing_hint=False)
