"""Command-line ``key=value`` overrides that refuse unknown keys instead of silently adding them."""

import difflib
from typing import List

from detectron2.config import LazyConfig
from omegaconf import DictConfig, OmegaConf

__all__ = ["apply_overrides", "all_keys"]


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


def apply_overrides(cfg: DictConfig, overrides: List[str]) -> DictConfig:
    """Apply Detectron2-style overrides; a key must already exist unless written ``+key=value``.

    Raises:
        KeyError: naming the unknown key and the closest existing keys.
    """
    checked = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise KeyError(f"[train_net] override '{item}' is not of the form key=value")
        if key.startswith("+"):
            checked.append(f"{key[1:]}={value}")
            continue
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            close = difflib.get_close_matches(key, all_keys(cfg), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(
                f"[train_net] unknown config key '{key}' in override '{item}'{hint} "
                f"(write +{key}=... to add a new key)"
            )
        checked.append(item)
    return LazyConfig.apply_overrides(cfg, checked)
