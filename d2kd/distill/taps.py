"""Record named intermediate outputs of a model with forward hooks, without editing the model."""

from typing import Any, Dict, Iterable, List, Tuple

from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["Taps", "check_tap_paths", "BatchNormInputStats"]


def check_tap_paths(model: nn.Module, paths: Iterable[str], owner: str = "Taps") -> None:
    """Raise ValueError naming the first tap path that is not a submodule of ``model``."""
    names = dict(model.named_modules())
    for path in paths:
        if path not in names:
            children = sorted(n for n in names if n and "." not in n)
            raise ValueError(
                f"[{owner}] tap '{path}' not found in {type(model).__name__}; "
                f"top-level modules: {', '.join(children)}"
            )


class Taps:
    """A context manager that records the inputs and outputs of named submodules.

    ``outputs``/``inputs`` hold the last call of each module; ``all_outputs`` every call.

    Hooks exist only inside the ``with`` block, so a model used for evaluation or export never
    carries them. Records are cleared on entry.

    Example::

        with Taps(student, ["backbone"]) as taps:
            losses = student(batched_inputs)
        features = taps.outputs["backbone"]  # dict of FPN maps
    """

    def __init__(self, model: nn.Module, paths: Iterable[str]):
        self.paths: Tuple[str, ...] = tuple(dict.fromkeys(paths))
        check_tap_paths(model, self.paths)
        self._model = model
        self._handles: List[RemovableHandle] = []
        self.outputs: Dict[str, Any] = {}
        self.inputs: Dict[str, Tuple[Any, ...]] = {}
        # Every call, in order, for modules run more than once per forward (e.g. a RetinaNet
        # head tower applied to each FPN level): path -> [output of call 0, call 1, ...].
        self.all_outputs: Dict[str, List[Any]] = {}

    def _hook(self, path: str):
        def record(module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
            self.inputs[path] = args
            self.outputs[path] = output
            self.all_outputs.setdefault(path, []).append(output)

        return record

    def __enter__(self) -> "Taps":
        self.outputs.clear()
        self.inputs.clear()
        self.all_outputs.clear()
        modules = dict(self._model.named_modules())
        for path in self.paths:
            self._handles.append(modules[path].register_forward_hook(self._hook(path)))
        return self

    def remove(self) -> None:
        """Remove every hook this object registered."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __exit__(self, *exc) -> None:
        self.remove()


class BatchNormInputStats:
    """A context manager recording, at every BatchNorm layer of a model, the per-channel mean
    and variance of the layer's input batch, next to the layer's running statistics.

    DFAD's image prior (:func:`d2kd.losses.discrepancy.bn_statistics_loss`) compares the two on
    generated images; the statistics keep their gradient to the images. Only trained BatchNorm
    layers (``nn.BatchNorm*``, SyncBN) carry statistics of the data; a model without any (frozen
    ImageNet BN, GroupNorm) is refused at construction.

    Example::

        with BatchNormInputStats(teacher) as stats:
            teacher.backbone(images)
        loss = bn_statistics_loss(*stats.lists())
    """

    def __init__(self, model: nn.Module, owner: str = "BatchNormInputStats"):
        self.layers = [
            (name, m)
            for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        if not self.layers:
            norms = sorted(
                {type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__}
            )
            raise ValueError(
                f"[{owner}] {type(model).__name__} has no BatchNorm layer with running "
                f"statistics (norm layers: {norms or 'none'}), so there is no image prior to "
                "match; set the BN prior's weight to 0"
            )
        self._handles: List[RemovableHandle] = []
        self.records: List[Tuple[Any, Any, Any, Any]] = []

    def _hook(self, module: nn.Module, args: Tuple[Any, ...]) -> None:
        x = args[0]
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        self.records.append((mean, var, module.running_mean, module.running_var))

    def __enter__(self) -> "BatchNormInputStats":
        self.records.clear()
        self._handles = [m.register_forward_pre_hook(self._hook) for _, m in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def lists(self) -> Tuple[List[Any], List[Any], List[Any], List[Any]]:
        """(batch means, batch variances, running means, running variances), one per call."""
        if not self.records:
            return [], [], [], []
        return tuple(list(x) for x in zip(*self.records))  # type: ignore[return-value]
