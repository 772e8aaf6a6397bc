"""Run configuration: packaged YAML defaults < ``--config FILE`` < command-line flags.

The defaults live in ``hoconv/app/configs/<name>.yaml`` (package data). A user file may set any
subset of the keys; an unknown key is an error (a typo must not be silently ignored).
Dictionaries (``model_kwargs``, ``data_kwargs``) are merged key by key.
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

CHOICES: dict[str, tuple] = {
    "task": ("affect", "classify"),
    "keep": ("best", "last", "both"),
    "augment": (None, True, False),
    "mode": ("static", "video"),
    "phase": (None, "temporal", "all"),
    "optimizer": ("adam", "sgd"),
    "scheduler": ("step", "multistep", "plateau", "cosine", "none"),
}
POSITIVE_INT = ("epochs", "batch_size", "lr_step")
NON_NEGATIVE = ("lr", "weight_decay", "lasso", "momentum", "workers", "lr_gamma", "warmup_steps")


def packaged_config(name: str) -> dict:
    """Read ``hoconv/app/configs/<name>.yaml``."""
    try:
        text = resources.files("hoconv.app.configs").joinpath(f"{name}.yaml").read_text()
    except FileNotFoundError as err:
        raise ValueError(f"no packaged config {name!r} (hoconv/app/configs/{name}.yaml)") from err
    return yaml.safe_load(text) or {}


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a user config file (a YAML mapping)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(
            f"--config: {path} is not valid YAML ({str(err).splitlines()[0]})"
        ) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config: {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def merge(base: dict, override: dict, *, where: str = "config") -> dict:
    """Return ``base`` updated with ``override``; unknown keys raise, dicts merge per key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in out:
            known = ", ".join(sorted(out))
            raise ValueError(f"{where}: unknown key {key!r}; known keys: {known}")
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(name: str, config_file: str | None = None, overrides: dict | None = None) -> dict:
    """Defaults ``name`` < ``config_file`` < ``overrides`` (``None`` values are skipped)."""
    cfg = packaged_config(name)
    if config_file:
        cfg = merge(cfg, read_yaml(config_file), where=f"--config {config_file}")
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    cfg = merge(cfg, flags, where="command line")
    infer_auto(cfg)
    validate(cfg)
    return cfg


CLASSIFY_DATA = ("cifar10", "jester")


def data_task(data: str) -> str:
    """The task a data set is labelled for: cifar10 / jester -> classify, else affect."""
    return "classify" if data in CLASSIFY_DATA else "affect"


def infer_auto(cfg: dict) -> None:
    """Resolve ``task: auto`` from the data set and ``workers: auto`` from the cores; in place.

    Raises:
        ValueError: an explicit task that the data set does not carry labels for.
    """
    if "task" in cfg and "data" in cfg:
        wanted = data_task(cfg["data"])
        if cfg["task"] == "auto":
            cfg["task"] = wanted
        elif cfg["task"] != wanted and cfg["data"] in CLASSIFY_DATA:
            raise ValueError(
                f"task: {cfg['task']!r} does not fit data {cfg['data']!r}, which is labelled "
                f"for {wanted!r}; drop --task (it follows from --data) or pass --task {wanted}"
            )
    if cfg.get("workers") == "auto":
        cfg["workers"] = min(4, max(0, (os.cpu_count() or 1) - 1))


def validate(cfg: dict) -> None:
    """Check choices and ranges of the keys that have them."""
    for key, allowed in CHOICES.items():
        if key in cfg and cfg[key] not in allowed:
            raise ValueError(f"{key}: {cfg[key]!r} is not one of {', '.join(map(str, allowed))}")
    for key in POSITIVE_INT:
        if key in cfg and (not isinstance(cfg[key], int) or cfg[key] < 1):
            raise ValueError(f"{key}: expected a positive integer, got {cfg[key]!r}")
    for key in NON_NEGATIVE:
        if key == "lasso" and cfg.get(key) == "auto":  # hoconv.lasso_schedule picks gamma
            continue
        if key in cfg and (not isinstance(cfg[key], (int, float)) or cfg[key] < 0):
            raise ValueError(f"{key}: expected a non-negative number, got {cfg[key]!r}")
    for key in ("model_kwargs", "data_kwargs"):
        if key in cfg and not isinstance(cfg[key], dict):
            raise ValueError(f"{key}: expected a mapping, got {cfg[key]!r}")
    betas = cfg.get("betas")
    if betas is not None and (
        len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)
    ):
        raise ValueError(f"betas: expected two numbers in [0, 1), got {betas!r}")


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """Parse repeated ``KEY=VALUE`` flags; values are read as YAML (``3``, ``0.5``, ``[1,2]``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag}: expected KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = yaml.safe_load(value)
    return out


def save(cfg: dict, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))
