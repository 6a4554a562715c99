#!/usr/bin/env python
"""Golden outputs of every loss in d2kd/losses, so a refactor that changes a number fails.

    python tests/golden/generate.py            # (re)write tests/golden/<case>.pt
    python tests/golden/generate.py --check    # recompute every case; exit 1 on a difference

A case is one loss module of ``d2kd/losses`` on small seeded inputs: its ``.pt`` file (plain
git, a few KB) holds the inputs, the state of any module whose initialisation is PyTorch's (FGD's
convolutions), and the outputs: losses, parts, masks, the gradients of the inputs and
parameters, and any state d2kd draws itself (LSHFM's projection). ``--check`` (and
``tests/golden/test_goldens.py``) recomputes each case from its stored inputs and state, so the
comparison does not depend on the random draws of the torch at hand, and compares every output
(relative 1e-5, absolute 1e-6). Regenerate only when a change of numbers is intended, and say
why in the commit.
"""

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from d2kd.losses.adversarial import adversarial_feature_loss  # noqa: E402
from d2kd.losses.cwd import cwd_loss  # noqa: E402
from d2kd.losses.discrepancy import dfad_discrepancy, generator_loss  # noqa: E402
from d2kd.losses.feature import feature_mse  # noqa: E402
from d2kd.losses.fgd import RETINANET_HPARAMS, FGDLoss, fgd_multilevel_masks  # noqa: E402
from d2kd.losses.head import akd_loss, ckd_loss, roi_mse  # noqa: E402
from d2kd.losses.mimic import MODES, MimicLoss  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
Case = Dict[str, Dict[str, Any]]  # {"inputs": ..., "state": ..., "outputs": ...}


def draw(seed: int, **shapes: tuple) -> Dict[str, Tensor]:
    """Standard-normal tensors of the given shapes, from one generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*shape, generator=g) for k, shape in shapes.items()}


def leaf(t: Tensor) -> Tensor:
    return t.detach().clone().requires_grad_(True)


def case_feature(stored: Optional[Case]) -> Case:
    """feature_mse on a (2, 3, 4, 5) pair."""
    x = stored["inputs"] if stored else draw(0, student=(2, 3, 4, 5), teacher=(2, 3, 4, 5))
    s = leaf(x["student"])
    loss = feature_mse(s, x["teacher"])
    loss.backward()
    return dict(inputs=x, state={}, outputs=dict(loss=loss.detach(), grad_student=s.grad))


def case_adversarial(stored: Optional[Case]) -> Case:
    """IKD's adversarial_feature_loss (summed squared error / N) on a (2, 3, 4, 5) pair."""
    x = stored["inputs"] if stored else draw(1, student=(2, 3, 4, 5), teacher=(2, 3, 4, 5))
    s = leaf(x["student"])
    loss = adversarial_feature_loss(s, x["teacher"])
    loss.backward()
    return dict(inputs=x, state={}, outputs=dict(loss=loss.detach(), grad_student=s.grad))


def case_discrepancy(stored: Optional[Case]) -> Case:
    """DFAD's per-part mean L1 (logits (2, 7, 5), deltas (2, 7, 4)) and both generator forms."""
    shapes = dict(s_cls=(2, 7, 5), s_box=(2, 7, 4), t_cls=(2, 7, 5), t_box=(2, 7, 4))
    x = stored["inputs"] if stored else draw(2, **shapes)
    s = {"cls": leaf(x["s_cls"]), "box": leaf(x["s_box"])}
    parts = dfad_discrepancy(s, {"cls": x["t_cls"], "box": x["t_box"]})
    total = sum(parts.values())
    out = {k: v.detach() for k, v in parts.items()}
    out.update({f"generator_{f}": generator_loss(total, f).detach() for f in ("log", "neg")})
    total.backward()
    out.update(grad_cls=s["cls"].grad, grad_box=s["box"].grad)
    return dict(inputs=x, state={}, outputs=out)


def case_head(stored: Optional[Case]) -> Case:
    """HEAD's RoI losses: AKD over fc6/fc7, CKD, and roi_mse with no RoIs (0, attached)."""
    shapes = dict(s6=(6, 8), s7=(6, 8), t6=(6, 8), t7=(6, 8), cell=(4, 8), fc7=(4, 8))
    x = stored["inputs"] if stored else draw(3, **shapes)
    s6, s7, cell = leaf(x["s6"]), leaf(x["s7"]), leaf(x["cell"])
    akd = akd_loss([s6, s7], [x["t6"], x["t7"]])
    ckd = ckd_loss(cell, x["fc7"])
    empty = roi_mse(torch.zeros(0, 8, requires_grad=True), torch.zeros(0, 8))
    (akd + ckd + empty).backward()
    out = dict(akd=akd.detach(), ckd=ckd.detach(), empty=empty.detach())
    out.update(grad_s6=s6.grad, grad_s7=s7.grad, grad_cell=cell.grad)
    return dict(inputs=x, state={}, outputs=out)


def case_mimic(stored: Optional[Case]) -> Case:
    """LSHFM's MimicLoss in each mode (D 6, 12 hashes, projection std 0.5), pooled over rows and
    averaged per image; the projection is d2kd's own seeded draw, so it is an output."""
    if stored:
        x = stored["inputs"]
    else:
        x = dict(draw(4, f_s=(5, 6), f_t=(5, 6)), image_ids=torch.tensor([0, 0, 1, 1, 1]))
    out: Dict[str, Tensor] = {}
    for mode in MODES:
        loss = MimicLoss(6, mode=mode, beta=7.0, hash_num=12, std=0.5, seed=0)
        if loss.projection is not None:
            out[f"{mode}/projection"] = loss.projection.weight.clone()
        for tag, args in (("rows", ()), ("per_image", (x["image_ids"], 2))):
            f_s = leaf(x["f_s"])
            parts = loss(f_s, x["f_t"], *args)
            sum(parts.values()).backward()
            out.update({f"{mode}/{tag}/{k}": v.detach() for k, v in parts.items()})
            out[f"{mode}/{tag}/grad_f_s"] = f_s.grad
    return dict(inputs=x, state={}, outputs=out)


def case_cwd(stored: Optional[Case]) -> Case:
    """CWD's channel-wise KL on a (2, 3, 4, 5) pair at tau 1 and 4, with the student's gradient."""
    x = stored["inputs"] if stored else draw(7, student=(2, 3, 4, 5), teacher=(2, 3, 4, 5))
    out: Dict[str, Tensor] = {}
    for tau in (1.0, 4.0):
        s = leaf(x["student"])
        loss = cwd_loss(s, x["teacher"], tau)
        loss.backward()
        out.update({f"tau{tau:g}/loss": loss.detach(), f"tau{tau:g}/grad_student": s.grad})
    return dict(inputs=x, state={}, outputs=out)


def case_fgd(stored: Optional[Case]) -> Case:
    """FGD on two levels of a padded two-image batch (p3 needs an align conv), GcBlocks made
    non-trivial; also the masks (fg, bg stacked) of both box mappings. The module's parameters
    are PyTorch-initialised (then perturbed): they are stored, flattened, as state."""
    channels_s, channels_t = {"p3": 3, "p4": 4}, {"p3": 4, "p4": 4}
    hws = {"p3": (6, 8), "p4": (3, 4)}  # strides 8 and 16 on a 48 x 64 padded batch
    with torch.random.fork_rng():  # PyTorch's own initialisation, seeded, the global RNG kept
        torch.manual_seed(0)
        loss = FGDLoss(channels_s, channels_t, **RETINANET_HPARAMS)
    if stored:
        x = stored["inputs"]
        vector_to_parameters(stored["state"]["parameters"], loss.parameters())
    else:
        shapes = {f"s_{k}": (2, channels_s[k], *hw) for k, hw in hws.items()}
        shapes.update({f"t_{k}": (2, channels_t[k], *hw) for k, hw in hws.items()})
        x = draw(5, **shapes)
        x["boxes"] = [  # overlapping, fractional, border-touching and cell-sized boxes
            torch.tensor(
                [[3.0, 5.0, 30.0, 22.0], [20.0, 10.0, 60.0, 40.0], [7.0, 30.0, 9.5, 35.0]]
            ),
            torch.tensor([[0.0, 0.0, 64.0, 30.0], [30.5, 12.0, 33.0, 20.0]]),
        ]
        x["image_sizes"], x["padded_hw"] = [[48, 60], [30, 64]], [48, 64]
        g = torch.Generator().manual_seed(6)
        with torch.no_grad():  # zero-initialised last convs would make L_global trivial
            for level in loss.levels.values():
                for gc in (level.gc_s, level.gc_t):
                    last = gc.channel_add[-1]
                    last.weight.copy_(torch.randn(last.weight.shape, generator=g) * 0.3)
                    last.bias.copy_(torch.randn(last.bias.shape, generator=g) * 0.3)
    sizes, padded = [tuple(s) for s in x["image_sizes"]], tuple(x["padded_hw"])
    student = {k: leaf(x[f"s_{k}"]) for k in hws}
    teacher = {k: x[f"t_{k}"] for k in hws}
    losses, parts = loss.compute(student, teacher, x["boxes"], sizes, padded)
    sum(losses.values()).backward()
    out = {k: v.detach() for k, v in {**losses, **parts}.items()}
    out.update({f"grad/{k}": f.grad for k, f in student.items()})
    # Every parameter's gradient (align conv, both GcBlocks of each level), flattened in
    # named_parameters() order: one tensor keeps the file small.
    params = list(loss.parameters())
    out["grad/parameters"] = parameters_to_vector([p.grad for p in params])
    for official in (False, True):
        masks = fgd_multilevel_masks(x["boxes"], list(hws.values()), padded, sizes, official)
        for level, (fg, bg) in zip(hws, masks):
            out[f"masks/{'official' if official else 'padded'}/{level}"] = torch.stack([fg, bg])
    state = dict(parameters=parameters_to_vector(params).detach())
    return dict(inputs=x, state=state, outputs=out)


CASES: Dict[str, Callable[[Optional[Case]], Case]] = {
    "feature": case_feature,
    "adversarial": case_adversarial,
    "discrepancy": case_discrepancy,
    "head": case_head,
    "mimic": case_mimic,
    "fgd": case_fgd,
    "cwd": case_cwd,
}


def path_of(name: str, folder: Path = HERE) -> Path:
    return Path(folder) / f"{name}.pt"


def write_case(name: str, folder: Path = HERE) -> Path:
    """Compute a case from fresh seeded inputs and save it."""
    case = CASES[name](None)
    path = path_of(name, folder)
    torch.save({"case": name, **case}, path)
    return path


def check_case(name: str, folder: Path = HERE) -> List[str]:
    """Recompute a case from its stored inputs and state; return what differs (empty: equal)."""
    path = path_of(name, folder)
    if not path.is_file():
        return [f"{name}: {path} is missing; run python tests/golden/generate.py"]
    stored = torch.load(path, weights_only=True)
    got = CASES[name](stored)["outputs"]
    want = stored["outputs"]
    problems = []
    for key in sorted(set(want) | set(got)):
        if key not in got or key not in want:
            problems.append(f"{name}/{key}: {'no longer computed' if key in want else 'new'}")
            continue
        try:
            torch.testing.assert_close(got[key], want[key], rtol=RTOL, atol=ATOL)
        except AssertionError as e:
            problems.append(f"{name}/{key}: " + " ".join(str(e).split())[:300])
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--check", action="store_true", help="compare, write nothing; exit 1 if any differ"
    )
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--folder", default=str(HERE), help="where the .pt files are")
    args = ap.parse_args(argv)
    if not args.check:
        for name in args.cases:
            path = write_case(name, Path(args.folder))
            print(f"[golden] wrote {path} ({path.stat().st_size} bytes)")
        return 0
    problems = [p for name in args.cases for p in check_case(name, Path(args.folder))]
    for p in problems:
        print(f"[golden] {p}")
    print(f"[golden] {len(args.cases)} cases, {'all equal' if not problems else 'DIFFERENT'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
