#!/usr/bin/env python
"""Train or evaluate a d2kd recipe (a Distiller or a plain Detectron2 LazyConfig).

    python tools/train_net.py --config-file configs/quickstart/mse_R18_from_R18w.py \
        --num-gpus 1 train.device=cpu model.teacher.weights=teacher.pth

Flags are Detectron2's: --num-gpus (processes per machine; gloo on CPU), --num-machines,
--machine-rank, --dist-url, --resume, --eval-only, then key=value overrides; and --unsafe-load
(the one opt-out of safe checkpoint loading, for trusted legacy files).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2kd._deps import require_detectron2  # noqa: E402

require_detectron2()

from detectron2.engine import default_argument_parser, launch  # noqa: E402

import d2kd.data  # noqa: E402,F401  (registers the embedded synthetic datasets)
from d2kd.engine.setup import setup_run  # noqa: E402
from d2kd.engine.train_loop import do_eval_only, do_train, load_config  # noqa: E402


def overrides(args) -> list:
    """The command line's key=value overrides, with --unsafe-load as its config key."""
    return [*args.opts, *(["train.unsafe_load=True"] if args.unsafe_load else [])]


def main(args):
    cfg = load_config(args.config_file, overrides(args))
    setup_run(cfg, args)
    if args.eval_only:
        return do_eval_only(cfg)
    return do_train(args, cfg)


def invoke_main() -> None:
    parser = default_argument_parser()
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="read trusted legacy checkpoints with a full unpickle, which can run code "
        "(train.unsafe_load=True); by default only tensors, arrays and plain containers load",
    )
    args = parser.parse_args()
    try:
        # Fail on a bad recipe or override before any process is spawned.
        load_config(args.config_file, overrides(args))
    except (FileNotFoundError, KeyError) as e:
        sys.exit(str(e.args[0] if e.args else e))
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
