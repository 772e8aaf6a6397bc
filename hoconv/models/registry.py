"""A tiny model registry: ``register_model`` decorates builders, ``create_model`` calls them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from hoconv._fast.switch import check_implementation
from hoconv.layers import use_implementation

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Builder) -> Builder:
    """Register ``fn`` under its ``__name__``.

    Args:
        fn: builder returning an ``nn.Module``; its name becomes the model name.

    Returns:
        ``fn`` unchanged (so this works as a decorator).

    Raises:
        ValueError: if a model with the same name is already registered.
    """
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Return the sorted names of every registered model."""
    return sorted(_REGISTRY)


def is_zoo_model(name: str) -> bool:
    """Whether ``name`` is one of hoconv's own models (they all take the shared head kwargs,
    e.g. ``bound_va``); models registered elsewhere may not."""
    builder = _REGISTRY.get(name)
    return builder is not None and builder.__module__.startswith("hoconv.models.")


def create_model(name: str, implementation: str | None = None, **kwargs: object) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments ``kwargs``.

    Args:
        name: a name from ``list_models()``.
        implementation: of every CPConv in the model (None: they follow
            :func:`hoconv.set_implementation`).
        **kwargs: forwarded to the model's builder (e.g. ``num_outputs``, ``width``, ``head``).

    Raises:
        ValueError: if ``name`` is not registered; the message lists the known names.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        known = ", ".join(list_models())
        raise ValueError(f"unknown model name {name!r}; known models: {known}")
    if implementation is not None:
        check_implementation(implementation)
    model = _REGISTRY[name](**kwargs)
    return model if implementation is None else use_implementation(model, implementation)
