"""What the dispatch plan (:mod:`hoconv._fast.plan`) reads: the machine and the input.

:class:`Machine` is the process's side (instruction set, ``HOCONV_NATIVE``), :class:`Inputs`
the input's (shape, dtype, device, layout, whether a backward follows, the parameters' kind);
both are hashable, the keys of the plan's cache.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hoconv._fast import native


@dataclass(frozen=True)
class Machine:
    """What the process brings to the choice: instruction set and native-kernel mode.

    Attributes:
        isa: the native build variant (``"avx512"``, ``"avx2"``, ``"generic"``).
        native: ``HOCONV_NATIVE``: ``"1"`` forces the native kernels, ``"0"`` turns them off,
            anything else follows :attr:`Tuning.native_faster_on`.
        available: whether the native library loads; None: ask :func:`native.available`
            when it matters (it builds the library on first use).
    """

    isa: str
    native: str = ""
    available: bool | None = None


def machine() -> Machine:
    """This process's :class:`Machine` (``HOCONV_NATIVE_ISA`` and ``HOCONV_NATIVE`` read now)."""
    return _machine(os.environ.get("HOCONV_NATIVE_ISA", ""), os.environ.get("HOCONV_NATIVE", ""))


@functools.lru_cache(maxsize=16)
def _machine(isa_env: str, native_env: str) -> Machine:
    del isa_env  # the cache key: native.variant() reads it (and /proc/cpuinfo)
    return Machine(native.variant(), native_env)


@dataclass(frozen=True)
class Inputs:
    """The properties of an input (and the layer's parameters) the choice depends on."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    device: str
    layout: str  # "channels_first", "channels_last" or "strided"
    requires_grad: bool = False
    params_dtype: torch.dtype | None = None  # None: like the input
    params_device: str | None = None


def layout_of(x: torch.Tensor) -> str:
    """``"channels_first"``, ``"channels_last"`` (contiguous in either) or ``"strided"``."""
    if x.is_contiguous():
        return "channels_first"
    return "channels_last" if x.movedim(1, -1).is_contiguous() else "strided"


def describe(x: torch.Tensor, params: Sequence[torch.Tensor | None] = ()) -> Inputs:
    """The :class:`Inputs` of ``x`` (N, C, *S); ``params``: factors / bias that must match."""
    kinds = {(t.dtype, t.device.type) for t in params if t is not None}
    other = next(iter(kinds - {(x.dtype, x.device.type)}), (None, None))
    grad = torch.is_grad_enabled() and (
        x.requires_grad or any(t is not None and t.requires_grad for t in params)
    )
    return Inputs(tuple(x.shape), x.dtype, x.device.type, layout_of(x), grad, *other)


__all__ = ["Inputs", "Machine", "describe", "layout_of", "machine"]
