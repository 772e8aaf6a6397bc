"""Data sets: a small name -> constructor registry.

Usage::

    from hoconv.app.data import create_dataset, list_datasets
    ds = create_dataset("synthetic", split="train", mode="static")
    print(ds.summary)

Every constructor is called as ``ctor(root=root, split=split, mode=mode, **kwargs)`` and
returns a ``torch.utils.data.Dataset`` of dict samples with a ``.summary`` dict
(loaded / filtered per reason / corrupt paths). Sample contracts (see HELPERS.md):

* static: ``input`` float (3, H, W), ``valence``/``arousal`` float32 (), ``expression``
  int64 () (-1 = missing), ``video`` str, ``frame`` int64 ().
* video: ``input`` float (3, T, H, W), ``valence``/``arousal`` float32 (T,),
  ``expression`` int64 (T,), ``mask`` bool (T,), ``video`` str, ``frames`` int64 (T,).
* classification data sets use ``label`` int64 () instead of the affect targets.

Adding a data set (e.g. in ``hoconv/app/data/cifar10.py``)::

    from hoconv.app.data import register

    @register("cifar10")
    def cifar10(root=None, split="train", mode="static", **kwargs): ...

and import the module at the bottom of this file. Registering a name twice raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

_REGISTRY: dict[str, Callable[..., Dataset]] = {}


def register(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator registering a data set constructor under ``name`` (raises on duplicates)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"data set name must be a non-empty string, got {name!r}")

    def decorator(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in _REGISTRY:
            raise ValueError(f"data set {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Sorted names of the registered data sets."""
    return sorted(_REGISTRY)


def create_dataset(
    name: str,
    root: str | None = None,
    split: str = "train",
    mode: str = "static",
    **kwargs: Any,
) -> Dataset:
    """Build the data set ``name``.

    Args:
        name: a name from :func:`list_datasets`.
        root: data set root folder (``None`` only for data sets that need no files).
        split: ``"train"``, ``"val"`` or ``"test"``.
        mode: ``"static"`` (one sample per image / frame) or ``"video"`` (clips).
        **kwargs: data set specific options (see each constructor's docstring).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown data set {name!r}; expected one of {list_datasets()}")
    return _REGISTRY[name](root=root, split=split, mode=mode, **kwargs)


# Built-in data sets (importing registers them).
from hoconv.app.data import afew_va, aff_wild2, affectnet, cifar10, jester, sewa, synthetic  # noqa: E402, F401

__all__ = ["create_dataset", "list_datasets", "register"]
