"""Loading recipes and applying command-line overrides: one behaviour for every tool.

``train_net.py``, ``export_student.py``, ``visualize.py``, ``gen_adversarial.py`` and the
benchmarks all load a LazyConfig recipe through :func:`load_config`, so a mistyped key is refused
the same way everywhere (with the closest existing keys suggested) instead of being silently
added by ``LazyConfig.apply_overrides``.
"""

import difflib
import os
from typing import Any, List, Optional, Sequence

from detectron2.config import LazyConfig
from omegaconf import DictConfig, OmegaConf

__all__ = ["apply_overrides", "all_keys", "load_config", "ConfigError"]


class ConfigError(KeyError):
    """A recipe or override is wrong; the message names the file or key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def all_keys(cfg: DictConfig, prefix: str = "") -> List[str]:
    """Every dotted key of a config, for suggestions."""
    keys = []
    for k in cfg.keys():
        full = f"{prefix}{k}"
        keys.append(full)
        v = cfg.get(k) if not OmegaConf.is_missing(cfg, k) else None
        if isinstance(v, DictConfig):
            keys.extend(all_keys(v, f"{full}."))
    return keys


def apply_overrides(cfg: DictConfig, overrides: Sequence[str], owner: str = "config") -> DictConfig:
    """Apply Detectron2-style ``key=value`` overrides; a key must exist unless written ``+key=v``.

    Raises:
        ConfigError: naming the malformed override, or the unknown key and the closest
            existing keys.
    """
    checked = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"[{owner}] override '{item}' is not of the form key=value")
        if key.startswith("+"):
            checked.append(f"{key[1:]}={value}")
            continue
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            close = difflib.get_close_matches(key, all_keys(cfg), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"[{owner}] unknown config key '{key}' in override '{item}'{hint} "
                f"(write +{key}=... to add a new key)"
            )
        checked.append(item)
    return LazyConfig.apply_overrides(cfg, checked)


def load_config(
    path: str,
    overrides: Optional[Sequence[str]] = None,
    required: Sequence[str] = ("model", "train", "dataloader"),
    owner: str = "config",
) -> Any:
    """Load a LazyConfig recipe and apply overrides, with errors that name the file or key.

    Args:
        path: the recipe (a ``.py`` LazyConfig or a ``.yaml`` dumped by a run).
        overrides: ``key=value`` strings (see :func:`apply_overrides`).
        required: top-level keys the recipe must define.
        owner: the tool named in error messages.

    Raises:
        FileNotFoundError: the recipe does not exist.
        ConfigError: a required key is missing, or an override is malformed or unknown.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"[{owner}] config file not found: {path}")
    cfg = LazyConfig.load(path)
    for key in required:
        if key not in cfg:
            raise ConfigError(f"[{owner}] {path} defines no '{key}' (a LazyConfig recipe needs it)")
    return apply_overrides(cfg, list(overrides or []), owner=owner)
