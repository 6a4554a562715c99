"""What a run sets up before it trains: loggers, seeds, its output folder, its config copy.

Detectron2's ``default_setup`` also writes ``config.yaml`` at once, so a run that then fails its
checks (a missing teacher, a typo'd level) overwrites the config of the run that produced the
folder's checkpoints. Here the copy is staged before anything is built (:func:`staged_config`)
and renamed into place only once the run has passed its checks and is about to train.
"""

import logging
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from detectron2.config import LazyConfig
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

__all__ = ["setup_run", "staged_config"]

logger = logging.getLogger("d2kd")


def setup_run(cfg: Any, args: Any) -> None:
    """Create the output folder, set up the loggers (Detectron2's, fvcore's, d2kd's) and seed.

    Raises:
        NotADirectoryError: ``train.output_dir`` exists and is not a folder.
    """
    out = cfg.train.get("output_dir", "")
    if out and os.path.exists(out) and not os.path.isdir(out):
        raise NotADirectoryError(f"[train_net] train.output_dir={out} exists and is not a folder")
    if comm.is_main_process() and out:
        os.makedirs(out, exist_ok=True)
    rank = comm.get_rank()
    setup_logger(out or None, distributed_rank=rank, name="fvcore")
    setup_logger(out or None, distributed_rank=rank, name="d2kd", abbrev_name="d2kd")
    d2_logger = setup_logger(out or None, distributed_rank=rank)
    d2_logger.info(f"Rank of current process: {rank}. World size: {comm.get_world_size()}")
    d2_logger.info("Environment info:\n" + collect_env_info())
    d2_logger.info("Command line arguments: " + str(args))
    seed = cfg.train.get("seed", -1)
    seed_all_rng(None if seed is None or seed < 0 else seed + rank)


@contextmanager
def staged_config(cfg: Any) -> Iterator[Callable[[], None]]:
    """Save the config now (before training mutates it) to a temporary file; yield a function
    that renames it to ``<output_dir>/config.yaml``. Left unpublished, the file is removed."""
    out = cfg.train.get("output_dir", "")
    tmp = os.path.join(out, f".tmp-config-{os.getpid()}.yaml") if out else ""
    if tmp and comm.is_main_process():
        LazyConfig.save(cfg, tmp)
    published = []

    def publish() -> None:
        if not os.path.isfile(tmp):  # no output dir, another rank, or not expressible as yaml
            return
        path = os.path.join(out, "config.yaml")
        os.replace(tmp, path)
        published.append(path)
        logger.info(f"Full config saved to {path}")

    try:
        yield publish
    finally:
        if not published and tmp and os.path.isfile(tmp):
            os.unlink(tmp)
