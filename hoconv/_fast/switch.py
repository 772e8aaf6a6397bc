"""The implementation switch: which path CP layers without an implementation of their own take.

A process-wide default, as timm's fused-attention switch: :func:`set_implementation`, the
context manager :func:`implementation`, or the ``HOCONV_IMPLEMENTATION`` environment
variable; ``"auto"`` (the dispatch plan of :mod:`hoconv._fast.plan` decides) when none is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

IMPLEMENTATIONS = ("auto", "plain", "fast", "dense")
ENV_IMPLEMENTATION = "HOCONV_IMPLEMENTATION"

_SELECTED: list[str | None] = [None]  # None: HOCONV_IMPLEMENTATION, else "auto"


def check_implementation(name: object, source: str = "implementation") -> str:
    """Check an implementation name ("auto", "plain", "fast" or "dense")."""
    if not isinstance(name, str) or name not in IMPLEMENTATIONS:
        raise ValueError(f"{source} must be one of {IMPLEMENTATIONS}, got {name!r}")
    return name


def get_implementation() -> str:
    """The implementation of every layer that has none of its own.

    :func:`set_implementation`'s value, else the ``HOCONV_IMPLEMENTATION`` environment
    variable, else ``"auto"``.
    """
    if _SELECTED[0] is not None:
        return _SELECTED[0]
    env = os.environ.get(ENV_IMPLEMENTATION, "").strip()
    return check_implementation(env, ENV_IMPLEMENTATION) if env else "auto"


def set_implementation(name: str | None) -> None:
    """Set the implementation of every CP layer that has none of its own (None: the default).

    A layer's own ``implementation`` (given to its constructor, ``from_dense``,
    ``factorize``, ``create_model`` or set on the attribute) wins over this.
    """
    _SELECTED[0] = None if name is None else check_implementation(name)


@contextmanager
def implementation(name: str | None) -> Iterator[str]:
    """Context manager: :func:`set_implementation` inside the block, the previous value after."""
    previous = _SELECTED[0]
    set_implementation(name)
    try:
        yield get_implementation()
    finally:
        _SELECTED[0] = previous


__all__ = [
    "IMPLEMENTATIONS",
    "check_implementation",
    "get_implementation",
    "implementation",
    "set_implementation",
]
