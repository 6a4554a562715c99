#!/usr/bin/env python
"""DFAD's classic case, on CPU in minutes: is the adversarial loop right? (d2kd.engine.dfad_sanity)

    OMP_NUM_THREADS=1 python tools/dfad_sanity.py [--iters 200] [--batch 256] [--seed 0] \
        [--bn --bn-prior 1.0]

Renders MNIST-like digits, trains a LeNet-5 teacher (``--bn``: with BatchNorm), then a
LeNet-5-half student data-free with DFAD's loop (``--bn-prior W``: plus the teacher's BatchNorm
statistics prior in the generator's loss), and prints the accuracies on held-out digits.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from d2kd.engine.dfad_sanity import run  # noqa: E402
from d2kd.utils.files import write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=200, help="DFAD iterations (5+1 steps)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=64, help="GeneratorA width (official 64)")
    parser.add_argument("--lr-s", type=float, default=0.01, help="student SGD lr (official 0.01)")
    parser.add_argument(
        "--lr-g", type=float, default=1e-3, help="generator Adam lr (official 1e-3)"
    )
    parser.add_argument("--student-steps", type=int, default=5, help="k (official 5)")
    parser.add_argument(
        "--milestones", type=float, nargs="*", default=[],
        help="fractions of --iters where both lrs drop x0.1 (official: off for MNIST)",
    )  # fmt: skip
    parser.add_argument("--form", default="neg", help="generator loss: neg (official) or log")
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--bn", action="store_true", help="BatchNorm in the LeNets")
    parser.add_argument("--bn-prior", type=float, default=0.0, help="BN prior weight (needs --bn)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--output", default="", help="write the result as JSON here")
    args = parser.parse_args()
    if args.bn_prior > 0 and not args.bn:
        parser.error("--bn-prior needs a teacher with BatchNorm: add --bn")
    result = run(
        iters=args.iters, batch=args.batch, teacher_epochs=args.teacher_epochs, ngf=args.ngf,
        lr_s=args.lr_s, lr_g=args.lr_g, student_steps=args.student_steps, form=args.form,
        seed=args.seed, eval_every=args.eval_every, milestones=args.milestones, bn=args.bn,
        bn_prior=args.bn_prior,
    )  # fmt: skip
    result.update(vars(args), threads=torch.get_num_threads(), torch=torch.__version__)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=2))
    if args.output:
        write_json(result, args.output)


if __name__ == "__main__":
    main()
