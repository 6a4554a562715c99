"""IKD's schedule in one run: adversarial augmentation for an iteration window, then plain KD.

The official IKD trains twice: the "DFA" config for epochs 1-16, then ``--resume-from`` the plain
FGD config for epochs 17-24. :class:`AdversarialAugmentation` does both stages in one run.
"""

import logging
from typing import Any, Callable, Dict, Optional

from detectron2.engine import HookBase

from ..data.adversarial_mapper import AdversarialPairMapper, IterationAwareBatchStream
from ..distill.schedule import Window
from ..distill.terms.adversarial import AdversarialFeatureTerm
from .checkpoint import unwrap_ddp

__all__ = ["AdversarialAugmentation"]

logger = logging.getLogger("d2kd")


class AdversarialAugmentation(HookBase):
    """Switch IKD's pair, sample-specific augmentations and adversarial loss on for a window.

    Inside the window the paired mapper yields adversarial pairs and applies the sample-specific
    augmentations, and the adversarial term computes its loss; outside, training is the plain
    recipe (e.g. FGD). Everything is a function of the iteration: the hook hands its one
    ``Window`` object to the term and to the mapper before the loader's workers start (so the
    three cannot disagree), and the mapper learns each sample's iteration from the resumable
    loader, so workers need no messages. A loader that cannot tell the mapper the iteration works
    only with ``num_workers=0`` (the hook then sets it before each step) and is refused otherwise.
    Stream and mapper are recognised by type (subclasses included), never by class name.

    Online mode (``attack`` given): no stored adversarial images; the term attacks the teacher on
    the first ``ceil(fraction * N)`` images of each batch, every ``regenerate_every`` iterations,
    replaying the last ones in between.

    Its state (window bounds, online settings, the iteration it switched off) is saved in
    checkpoints and checked on ``--resume``.

    Args:
        window: ``Window(start=..., end=...)``: on for ``start <= iteration < end`` (``end`` None:
            to the end of training). The paper: the first 16 of 24 epochs. Default: always on.
        term: name of the :class:`AdversarialFeatureTerm` in the Distiller's terms.
        attack: an attack callable (``d2kd.data.adversarial.Attack``) for online mode.
        fraction, regenerate_every: online settings (see :meth:`AdversarialFeatureTerm.configure`).
    """

    def __init__(
        self,
        window: Optional[Window] = None,
        term: str = "ikd_adv",
        attack: Optional[Callable] = None,
        fraction: float = 1.0,
        regenerate_every: int = 1,
    ):
        window = Window() if window is None else window
        if not isinstance(window, Window):
            raise TypeError(
                "[AdversarialAugmentation] window must be a d2kd.distill.schedule.Window, got "
                f"{type(window).__name__} {window!r}"
            )
        if window.weight == 0 or (window.end is not None and window.end <= window.start):
            raise ValueError(
                f"[AdversarialAugmentation] {window} is never on: need a non-zero weight and "
                f"end > start (got weight={window.weight}, start={window.start}, "
                f"end={window.end})"
            )
        self.window = window
        self.term_name = term
        self.attack = attack
        self.fraction = fraction
        self.regenerate_every = regenerate_every
        self.switched_off_at: Optional[int] = None
        self._term: Optional[AdversarialFeatureTerm] = None
        self._mapper = None
        self._set_mapper_iteration = False

    def is_active(self, iteration: int) -> bool:
        return self.window(iteration) != 0

    def _find_term(self) -> AdversarialFeatureTerm:
        model = unwrap_ddp(self.trainer.model)
        terms = getattr(model, "terms", None)
        if terms is None or self.term_name not in terms:
            raise KeyError(
                f"[AdversarialAugmentation] term '{self.term_name}' not in the model's terms "
                f"{list(terms) if terms is not None else '(not a Distiller)'}"
            )
        term = terms[self.term_name]
        if not isinstance(term, AdversarialFeatureTerm):
            raise TypeError(
                f"[AdversarialAugmentation] term '{self.term_name}' is a {type(term).__name__}, "
                "not an AdversarialFeatureTerm"
            )
        return term

    def _find_mapper(self) -> Optional[AdversarialPairMapper]:
        loader = getattr(self.trainer, "data_loader", None)
        stream = getattr(loader, "dataset", None)
        mapper = getattr(stream, "mapper", None)
        if not isinstance(mapper, AdversarialPairMapper):
            return None
        if not isinstance(stream, IterationAwareBatchStream):
            if getattr(loader, "num_workers", 0) > 0:
                raise RuntimeError(
                    "[AdversarialAugmentation] the loader's workers cannot learn the iteration: "
                    "use d2kd.data.adversarial_mapper.build_adversarial_train_loader, or "
                    "num_workers=0"
                )
            self._set_mapper_iteration = True
        if self.attack is None and getattr(mapper, "adv_dir", None) is None:
            raise ValueError(
                "[AdversarialAugmentation] offline mode (no attack) needs the mapper's adv_dir"
            )
        return mapper

    def before_train(self) -> None:
        self._term = self._find_term()
        self._term.configure(self.window, self.attack, self.fraction, self.regenerate_every)
        self._mapper = self._find_mapper()
        if self._mapper is not None:
            # Workers start at the first step, after this, and copy the window with the mapper.
            self._mapper.set_window(self.window)
        mode = "online" if self.attack is not None else "offline"
        logger.info(
            f"[AdversarialAugmentation] {mode}, window [{self.window.start}, {self.window.end}) "
            f"from iteration {self.trainer.iter + 1 if self.trainer.iter > 0 else 0}"
        )

    def before_step(self) -> None:
        it = self.trainer.iter
        active = self.is_active(it)
        if self._set_mapper_iteration:
            self._mapper.iteration = it
        if not active and it >= self.window.start and self.switched_off_at is None:
            self.switched_off_at = it
            logger.info(f"[AdversarialAugmentation] adversarial augmentation off at iteration {it}")
        self.trainer.storage.put_scalar("ikd/active", float(active), smoothing_hint=False)

    def state_dict(self) -> Dict[str, Any]:
        # Keys as before the Window (start_iter/end_iter), so older checkpoints compare equal.
        return {
            "start_iter": self.window.start,
            "end_iter": self.window.end,
            "online": self.attack is not None,
            "fraction": self.fraction,
            "regenerate_every": self.regenerate_every,
            "switched_off_at": self.switched_off_at,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        mine = self.state_dict()
        changed = {
            k: (state.get(k), mine[k])
            for k in mine
            if k != "switched_off_at" and state.get(k) != mine[k]
        }
        if changed:
            logger.warning(
                "[AdversarialAugmentation] the recipe's settings differ from the checkpoint's "
                f"(checkpoint, now): {changed}; the recipe's apply from here on"
            )
        self.switched_off_at = state.get("switched_off_at")
