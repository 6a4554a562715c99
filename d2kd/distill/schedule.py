"""Loss-weight schedules: pure functions of the iteration, so resuming needs no state of theirs."""

from dataclasses import dataclass
from typing import Callable, Optional, Union

__all__ = ["Constant", "LinearWarmup", "Window", "as_schedule", "Schedule"]

Schedule = Callable[[int], float]


@dataclass(frozen=True)
class Constant:
    """The same weight at every iteration."""

    weight: float = 1.0

    def __call__(self, iteration: int) -> float:
        return self.weight


@dataclass(frozen=True)
class LinearWarmup:
    """Weight rising linearly from 0 at ``start`` to ``weight`` at ``start + warmup_iters``.

    HEAD warms its KD weights up this way (2.0 over 2000 iterations in the paper).
    """

    weight: float = 1.0
    warmup_iters: int = 0
    start: int = 0

    def __call__(self, iteration: int) -> float:
        if iteration < self.start:
            return 0.0
        if self.warmup_iters <= 0:
            return self.weight
        return self.weight * min(1.0, (iteration - self.start + 1) / self.warmup_iters)


@dataclass(frozen=True)
class Window:
    """``weight`` for ``start <= iteration < end`` (``end=None``: no end), 0 elsewhere.

    Used to switch a term on for part of the schedule (e.g. IKD's adversarial window).
    """

    weight: float = 1.0
    start: int = 0
    end: Optional[int] = None

    def __call__(self, iteration: int) -> float:
        inside = iteration >= self.start and (self.end is None or iteration < self.end)
        return self.weight if inside else 0.0


def as_schedule(value: Union[float, int, Schedule], key: str = "?") -> Schedule:
    """Turn a number into a :class:`Constant`; pass callables through.

    Raises:
        TypeError: naming ``key`` when ``value`` is neither a number nor callable.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Constant(float(value))
    if callable(value):
        return value
    raise TypeError(
        f"[Distiller] weight for term '{key}' must be a number or a schedule, got {value!r}"
    )
