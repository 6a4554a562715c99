#!/usr/bin/env python
"""What one DFAD iteration costs against one FGD training step, timed side by side.

    python benchmarks/dfad_cost.py [--repeats 10] [--threads 1] [--quick]
        [--out benchmarks/results/dfad_cost.json]

Builds, with random weights, the synthetic FGD recipe (one training step: student + teacher
features + FGD + backward + SGD at batch 8) and each synthetic DFAD recipe (one iteration of its
own trainer: K student steps on generated images, then the generator step through both models,
plus the BN prior where the recipe has it), and times them in interleaved, shuffled rounds
(``d2kd.utils.timing``). Reports medians and each DFAD recipe's per-round ratio to the FGD step
with a bootstrap 95% interval. SGD and Adam run at learning rate 0, so every round times the same
models. ``--quick`` uses the tiny test recipes (CI smoke).
"""

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import dfad_cost_table, now_iso  # noqa: E402

from d2kd.config import load_config  # noqa: E402
from d2kd.utils.files import write_json  # noqa: E402
from d2kd.utils.hardware import hardware  # noqa: E402
from d2kd.utils.timing import paired_ratio, summarize, time_interleaved  # noqa: E402

FGD = "configs/fgd/retinanet_R18_from_R18w_synth.py"
DFAD = {
    "dfad": "configs/dfad/retinanet_R18_from_R18w_synth.py",
    "dfad_fg_bn": "configs/dfad/retinanet_R18_from_R18w_synth_fg_bn.py",
}
QUICK = {"fgd": "tests/configs/tiny_fgd.py", "dfad": "tests/configs/tiny_dfad.py"}


def _distiller(recipe: str):
    import torch
    from detectron2.config import instantiate

    import d2kd.data  # noqa: F401  (registers the synthetic datasets)

    cfg = load_config(str(ROOT / recipe), owner="dfad_cost")
    torch.manual_seed(0)
    return cfg, instantiate(cfg.model).train()


def fgd_step(recipe: str) -> Callable[[], None]:
    """One KD training step of a feature recipe on one batch of its own loader."""
    import torch
    from detectron2.config import instantiate
    from detectron2.utils.events import EventStorage

    cfg, model = _distiller(recipe)
    batch = next(iter(instantiate(cfg.dataloader.train)))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)

    def step() -> None:
        with EventStorage(0):
            loss = sum(model(batch).values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def dfad_iteration(recipe: str) -> Callable[[], None]:
    """One iteration of a DFAD recipe's own trainer (student steps + generator step)."""
    import torch
    from detectron2.config import instantiate
    from detectron2.utils.events import EventStorage

    cfg, model = _distiller(recipe)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    node = cfg.train.trainer
    node.model, node.data_loader, node.optimizer = model, instantiate(cfg.dataloader.train), opt
    trainer = instantiate(node)
    hook = instantiate(cfg.train.hooks[0])
    hook.dump_period = 0
    for group in hook.optimizer.param_groups:
        group["lr"] = 0.0
    hook.base_lr = 0.0
    trainer.register_hooks([hook])
    trainer.max_iter, trainer.iter = 10**9, 0
    trainer._data_loader_iter_obj = iter(trainer.data_loader)
    hook.before_train()

    def step() -> None:
        with EventStorage(0) as storage:
            trainer.storage = storage
            trainer.run_step()

    return step


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny test recipes, 2 repeats")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dfad_cost.json"))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    recipes = QUICK if args.quick else {"fgd": FGD, **DFAD}
    fns: Dict[str, Callable[[], Any]] = {"fgd": fgd_step(recipes["fgd"])}
    fns.update({n: dfad_iteration(r) for n, r in recipes.items() if n != "fgd"})
    repeats = 2 if args.quick else args.repeats
    times = time_interleaved(fns, rounds=repeats, warmup=1, device="cpu")
    rows = []
    for name, secs in times.items():
        row = dict(name=name, recipe=recipes[name], **summarize(secs))
        if name != "fgd":
            row["vs_fgd"] = paired_ratio(secs, times["fgd"])
        rows.append(row)
    result = dict(
        benchmark="dfad_cost",
        quick=args.quick,
        repeats=repeats,
        rows=rows,
        hardware=hardware("cpu"),
        finished=now_iso(),
    )
    print(dfad_cost_table(result))
    write_json(result, args.out)
    print(f"[dfad_cost] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
