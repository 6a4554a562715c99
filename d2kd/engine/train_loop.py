"""Training and evaluation of LazyConfig recipes, for Distillers and plain detectors alike.

Modelled on Detectron2's ``tools/lazyconfig_train_net.py``; everything new is a hook or a small
function here, so the stock trainers (SimpleTrainer, AMPTrainer) run the loop.
"""

import logging
import os
from typing import Any, Dict, Optional

import torch
from detectron2.config import instantiate
from detectron2.data import build_detection_test_loader
from detectron2.engine import AMPTrainer, SimpleTrainer, default_writers, hooks
from detectron2.engine.defaults import create_ddp_model as d2_create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from torch import nn

from ..distill.distiller import Distiller
from ..distill.teacher import inherit_from_teacher
from ..utils.files import remove_stale_temporaries, write_json
from .checkpoint import DistillCheckpointer, split_student
from .hooks import GradientClipping
from .setup import staged_config

__all__ = [
    "do_train",
    "do_test",
    "build_trainer",
    "check_teacher",
    "create_ddp_model",
    "TeacherCheckError",
]

logger = logging.getLogger("d2kd")


class TeacherCheckError(RuntimeError):
    """The teacher's quick evaluation fell below the recipe's floor."""


def create_ddp_model(model: nn.Module, device: str, **ddp_kwargs: Any) -> nn.Module:
    """Detectron2's ``create_ddp_model``, with ``device_ids=None`` on the CPU (gloo), where
    DDP refuses the local rank it would otherwise pass.

    The Distiller tells DDP to ignore every teacher parameter and buffer, so the frozen teacher
    is neither synchronised nor broadcast.
    """
    kwargs = dict(ddp_kwargs)
    if not str(device).startswith("cuda"):
        kwargs["device_ids"] = None
    return d2_create_ddp_model(model, **kwargs)


def do_test(cfg, model: nn.Module, tag: str = "final") -> Optional[Dict[str, Any]]:
    """Evaluate ``model`` (for a Distiller: its student) on ``cfg.dataloader.test``.

    The test loader is built before the evaluator, so lazily rendered datasets exist on disk
    before COCOEvaluator reads their json. Results also go to ``<output_dir>/eval_<tag>.json``.
    """
    if "evaluator" not in cfg.dataloader:
        return None
    loader = instantiate(cfg.dataloader.test)
    evaluator = instantiate(cfg.dataloader.evaluator)
    results = inference_on_dataset(model, loader, evaluator)
    if comm.is_main_process() and results:
        print_csv_format(results)
        out = cfg.train.output_dir
        if out:
            os.makedirs(out, exist_ok=True)
            write_json(results, os.path.join(out, f"eval_{tag}.json"))
    return results


def check_teacher(cfg, teacher_model: nn.Module, num_images: int, min_ap: float) -> float:
    """Evaluate the loaded teacher on the first ``num_images`` test images; stop below a floor.

    A teacher that loaded "successfully" but predicts nothing useful would silently turn KD into
    noise; this catches it before the first training step.

    Returns:
        the teacher's box AP on those images.

    Raises:
        TeacherCheckError: when AP < ``min_ap``.
    """
    dataset = instantiate(cfg.dataloader.test.dataset)[:num_images]
    mapper = instantiate(cfg.dataloader.test.mapper)
    loader = build_detection_test_loader(dataset=dataset, mapper=mapper, num_workers=0)
    evaluator = instantiate(cfg.dataloader.evaluator)
    results = inference_on_dataset(teacher_model, loader, evaluator)
    ap = float(results.get("bbox", {}).get("AP", float("nan")))
    logger.info(f"[Teacher] quick check on {len(dataset)} images: AP={ap:.2f} (floor {min_ap})")
    if not ap >= min_ap:
        raise TeacherCheckError(
            f"[Teacher] AP {ap:.2f} on the first {len(dataset)} test images is below the "
            f"recipe's floor train.teacher_check.min_ap={min_ap}: wrong or undertrained teacher "
            f"weights ({getattr(cfg.model.teacher, 'weights', '?')})?"
        )
    return ap


def prepare_teacher(cfg, model: nn.Module) -> None:
    """Load a Distiller's teacher (strict key report) and run the optional quick check."""
    if not isinstance(model, Distiller) or model.teacher is None:
        return
    model.teacher.load(unsafe_load=bool(cfg.train.get("unsafe_load", False)))
    model.on_teacher_loaded()
    if model.init_student_from_teacher:
        inherit_from_teacher(model.student, model.teacher.model)
    check = cfg.train.get("teacher_check", None)
    if check and check.get("num_images", 0) > 0:
        check_teacher(cfg, model.teacher.model, check.num_images, check.get("min_ap", 0.0))


def build_trainer(cfg, model: nn.Module, data_loader, optimizer):
    """The trainer named by ``train.trainer`` (LazyCall node), else Detectron2's stock one."""
    node = cfg.train.get("trainer", None)
    if node is None:
        trainer_cls = AMPTrainer if cfg.train.amp.enabled else SimpleTrainer
        return trainer_cls(model, data_loader, optimizer)
    node.model, node.data_loader, node.optimizer = model, data_loader, optimizer
    return instantiate(node)


def do_train(args, cfg) -> Optional[Dict[str, Any]]:
    """Train ``cfg.model``; see :func:`_train` for the keys read. ``config.yaml`` is written
    only if the run gets past its checks (teacher, resume point) to the first step."""
    if comm.is_main_process() and cfg.train.output_dir:
        for path in remove_stale_temporaries(cfg.train.output_dir):
            logger.info(f"Removed {path}, left by a save that was killed")
    with staged_config(cfg) as publish_config:
        return _train(args, cfg, publish_config)


def _train(args, cfg, publish_config) -> Optional[Dict[str, Any]]:
    """Train ``cfg.model`` (a Distiller or a plain detector), resuming when asked.

    Config keys read:
        model: instantiates to a module (Distiller or Detectron2 model).
        dataloader.train / dataloader.test / dataloader.evaluator.
        optimizer: its ``params.model`` is set to the model here.
        lr_multiplier: an fvcore ParamScheduler.
        train.output_dir, train.init_checkpoint (student/plain weights), train.max_iter,
        train.amp.enabled, train.ddp (DDP kwargs), train.checkpointer (period, max_to_keep),
        train.eval_period, train.log_period, train.device,
        train.teacher_check (optional: num_images, min_ap; num_images=0 turns it off),
        train.unsafe_load (optional: read trusted legacy checkpoints with a full unpickle),
        train.clip_grad (optional: max_norm; the global gradient norm is clipped to it).
        train.hooks (optional: a list of LazyCall nodes of Detectron2 ``HookBase`` objects,
            registered after the LR scheduler and before checkpointing; a hook with
            ``state_dict``/``load_state_dict`` is saved and resumed with the trainer).
        train.trainer (optional: a LazyCall node of a trainer class, e.g. a ``SimpleTrainer``
            subclass with its own ``run_step``; it receives ``model``, ``data_loader`` and
            ``optimizer`` here. Default: AMPTrainer when train.amp.enabled, else SimpleTrainer).
    """
    if str(cfg.train.device).startswith("cpu"):
        # Gradients of models trained from scratch can drift into denormal floats, which x86
        # CPUs process many times slower; flushing them to zero costs nothing in accuracy.
        torch.set_flush_denormal(True)
    model = instantiate(cfg.model)
    logger.info(f"Model:\n{model}")
    model.to(cfg.train.device)
    prepare_teacher(cfg, model)

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = create_ddp_model(model, cfg.train.device, **cfg.train.ddp)
    trainer = build_trainer(cfg, model, train_loader, optim)
    extra_hooks = [instantiate(h) for h in (cfg.train.get("hooks", None) or [])]
    unsafe = bool(cfg.train.get("unsafe_load", False))
    checkpointer = DistillCheckpointer(
        model, cfg.train.output_dir, unsafe_load=unsafe, trainer=trainer
    )
    trainer.register_hooks(
        [
            # Detectron2's timer skips 2 warm-up steps, so a run of 2 steps or fewer (a smoke or
            # scale check) logged no step time at all; short runs skip fewer (max_iter <= 2: none).
            hooks.IterationTimer(warmup_iter=min(3, max(1, cfg.train.max_iter - 1))),
            GradientClipping(cfg.train.clip_grad.max_norm) if cfg.train.get("clip_grad") else None,
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            *extra_hooks,
            (
                hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
                if comm.is_main_process()
                else None
            ),
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model, "last")),
            (
                hooks.PeriodicWriter(
                    default_writers(cfg.train.output_dir, cfg.train.max_iter),
                    period=cfg.train.log_period,
                )
                if comm.is_main_process()
                else None
            ),
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    if start_iter > cfg.train.max_iter:
        raise ValueError(
            f"[train_net] the checkpoint {checkpointer.get_checkpoint_file()} is at iteration "
            f"{trainer.iter}, past train.max_iter={cfg.train.max_iter}: raise train.max_iter to "
            "train on, or give another train.output_dir to start anew"
        )
    if hasattr(train_loader, "set_start_iter"):
        train_loader.set_start_iter(start_iter)
    elif start_iter > 0:
        logger.warning("The training loader cannot skip ahead: data order restarts on resume.")
    # TorchScript's profiling executor (fvcore's scripted focal loss inside RetinaNet) switches to
    # a specialised graph after a function's first calls, with other gradient rounding: a run
    # resumed early would replay the first-call path where an uninterrupted run is already on
    # the specialised one, and training from scratch amplifies that noise. Unspecialised
    # execution makes a step's numerics independent of how many steps this process ran.
    publish_config()
    with torch.jit.optimized_execution(False):
        trainer.train(start_iter, cfg.train.max_iter)
    return trainer.storage.latest() if comm.is_main_process() else None


def do_eval_only(cfg) -> Optional[Dict[str, Any]]:
    """Evaluate the student (or plain model) loaded from ``train.init_checkpoint``; no teacher."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    student, _ = split_student(model)
    unsafe = bool(cfg.train.get("unsafe_load", False))
    DistillCheckpointer(student, unsafe_load=unsafe).load(
        cfg.train.init_checkpoint, checkpointables=[]
    )
    model = create_ddp_model(model, cfg.train.device)
    return do_test(cfg, model, "final")


def load_config(path: str, overrides) -> Any:
    """Load a training recipe with overrides (see :func:`d2kd.config.load_config`)."""
    from ..config import load_config as _load

    return _load(path, overrides, owner="train_net")
