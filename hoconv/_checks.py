"""Argument normalisation and validation shared by every layer of the library.

Each helper raises ``TypeError`` / ``ValueError`` naming the argument, what was wrong and
what was expected, so that bad input never surfaces as a deep stack trace from torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

PaddingArg = int | Sequence[int] | str


def as_tuple(
    value: int | Sequence[int], dim: int, name: str, *, minimum: int = 1
) -> tuple[int, ...]:
    """Expand an int or check a sequence of ints into a tuple of length ``dim``.

    Args:
        value: one int for every axis, or one int per axis.
        dim: number of spatial axes.
        name: argument name used in error messages.
        minimum: smallest allowed value of each entry.

    Returns:
        A tuple of ``dim`` ints.
    """
    if isinstance(value, bool) or not isinstance(value, (int, Sequence)) or isinstance(value, str):
        raise TypeError(f"{name} must be an int or a sequence of {dim} ints, got {value!r}")
    values = (value,) * dim if isinstance(value, int) else tuple(value)
    if len(values) != dim:
        raise ValueError(f"{name} must have {dim} entries (one per spatial axis), got {value!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} entries must be ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} entries must be >= {minimum}, got {value!r}")
    return values


def check_dim(dim: int) -> int:
    """Check the number of spatial dimensions of a layer (an int >= 1)."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int >= 1, got {dim!r}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1 (number of spatial axes), got {dim}")
    return dim


def check_channels(value: int, name: str) -> int:
    """Check a channel count (an int >= 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def resolve_padding(
    padding: PaddingArg,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> tuple[tuple[int, int], ...]:
    """Turn a padding argument into explicit (before, after) zero-padding per axis.

    ``"same"`` follows PyTorch: total ``dilation * (kernel - 1)``, the extra element of an
    odd total goes after; it requires stride 1. ``"valid"`` is no padding.

    Args:
        padding: int, per-axis ints, ``"same"`` or ``"valid"``.
        kernel_size: kernel size per axis.
        stride: stride per axis.
        dilation: dilation per axis.

    Returns:
        One ``(before, after)`` pair per axis.
    """
    dim = len(kernel_size)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * dim
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(
                    f"padding='same' needs stride 1 on every axis, got stride={tuple(stride)}"
                )
            totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise ValueError(
            f"padding must be an int, a tuple of ints, 'same' or 'valid', got {padding!r}"
        )
    pads = as_tuple(padding, dim, "padding", minimum=0)
    return tuple((p, p) for p in pads)


def output_size(
    size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int, axis: int
) -> int:
    """Length of one axis after a convolution, with a clear error when the kernel does not fit."""
    span = dilation * (kernel - 1) + 1
    padded = size + pad[0] + pad[1]
    if not torch.jit.is_tracing() and padded < span:
        raise ValueError(
            f"kernel of size {kernel} (dilation {dilation}, span {span}) is larger than spatial axis "
            f"{axis} of the padded input ({size} + padding {pad} = {padded})"
        )
    return (padded - span) // stride + 1


def check_input(x: torch.Tensor, in_channels: int, dim: int) -> None:
    """Check that ``x`` is a batched ``(N, C, *spatial)`` tensor with ``dim`` spatial axes."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if torch.jit.is_tracing():  # shapes are constants of the trace; checks would only warn
        return
    if x.dim() != dim + 2:
        raise ValueError(
            f"input must have shape (N, C, {', '.join(f'D{i}' for i in range(dim))}) "
            f"({dim + 2} dims for a {dim}-D convolution), got shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"input has {x.shape[1]} channels (dim 1), expected in_channels={in_channels}"
        )


def prod(values: Sequence[int]) -> int:
    """Product of a sequence of ints (1 for an empty one)."""
    return math.prod(values)


def conv_geometry(
    x: torch.Tensor,
    in_channels: int,
    kernel_size: Sequence[int],
    stride: int | Sequence[int],
    padding: PaddingArg,
    dilation: int | Sequence[int],
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...], tuple[int, ...]]:
    """Check ``x`` against a convolution and resolve its geometry, one value per spatial axis.

    Raises a clear error when ``x`` has the wrong shape or the kernel does not fit the padded input.

    Returns:
        ``(stride, pads, dilation)``, ``pads`` as (before, after) pairs.
    """
    dim = len(kernel_size)
    check_input(x, in_channels, dim)
    stride = as_tuple(stride, dim, "stride")
    dilation = as_tuple(dilation, dim, "dilation")
    pads = resolve_padding(padding, kernel_size, stride, dilation)
    for axis in range(dim):
        output_size(
            x.shape[2 + axis], kernel_size[axis], stride[axis], pads[axis], dilation[axis], axis
        )
    return stride, pads, dilation
