"""Modules that only exist in transduced models, and the geometry of the new axes.

- :class:`TransducedTuckerConv`: a Tucker convolution whose new axes are a separable,
  trainable profile of its (source) core: ``core'[o, i, .., k, ..] = core[o, i, ..] * u[o, i, k]``.
- :class:`ConvNd`: a dense convolution for any number of axes (torch stops at 3).
- :class:`PerFrame`: applies a source module on every position of the new axes (pooling,
  adaptive pooling, instance norm, flatten), i.e. kernel 1 / stride 1 on the new axes.
- :class:`ChannelDropout`: ``nn.Dropout{1,2,3}d`` for any number of axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hoconv import functional as HF
from hoconv._checks import PaddingArg, resolve_padding
from hoconv.layers import TuckerConv

INITS = ("center", "ones", "average")


@dataclass(frozen=True)
class TransductionSpec:
    """Resolved arguments of :func:`hoconv.transduce`, one entry per new axis.

    Attributes:
        dims: number of new axes K.
        kernel_size: kernel size of each new axis.
        stride: stride of each new axis, an int or ``"match"`` (the layer's first stride).
        padding: ``"same"``, ``"valid"`` or one int per new axis.
        dilation: dilation of each new axis.
        init: ``"center"``, ``"ones"`` or ``"average"``.
        positions: indices of the new axes among the output's spatial axes (sorted).
    """

    dims: int
    kernel_size: tuple[int, ...]
    stride: tuple[int | str, ...]
    padding: str | tuple[int, ...]
    dilation: tuple[int, ...]
    init: str
    positions: tuple[int, ...]

    def as_dict(self) -> dict:
        """Plain keyword arguments of :func:`hoconv.transduce` (for configs and checkpoints)."""
        return {
            "dims": self.dims,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "init": self.init,
            "positions": self.positions,
        }


def insert_axes(old: Sequence, new: Sequence, positions: Sequence[int]) -> tuple:
    """Merge ``old`` per-axis values with ``new`` ones placed at ``positions`` (sorted)."""
    old_it, new_it = iter(old), iter(new)
    total = len(old) + len(new)
    return tuple(next(new_it) if a in positions else next(old_it) for a in range(total))


def remap_axes(axes: Sequence[int], positions: Sequence[int], total: int) -> tuple[int, ...]:
    """Where the old axes ``axes`` land once new axes are inserted at ``positions``."""
    old_slots = [a for a in range(total) if a not in positions]
    return tuple(old_slots[a] for a in axes)


def init_profile(size: int, init: str, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The initial 1-D profile of a new kernel axis: a centred delta, ones or ``1 / size``."""
    if init == "center":
        profile = torch.zeros(size, dtype=dtype, device=device)
        profile[size // 2] = 1.0
        return profile
    if init == "ones":
        return torch.ones(size, dtype=dtype, device=device)
    return torch.full((size,), 1.0 / size, dtype=dtype, device=device)


@dataclass(frozen=True)
class Geometry:
    """Full per-axis geometry of a layer after transduction."""

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: PaddingArg
    dilation: tuple[int, ...]
    new_kernel: tuple[int, ...]  # kernel size of each new axis


def new_geometry(
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: PaddingArg,
    dilation: Sequence[int],
    spec: TransductionSpec,
    name: str,
) -> Geometry:
    """Geometry of a (conv-like) layer after inserting the spec's new axes.

    A pointwise layer (every kernel size 1) stays pointwise on the new axes; ``"match"``
    strides copy the layer's first stride. New-axis padding ``"same"`` means
    ``dilation * (k - 1) / 2`` on both sides (odd kernels only, checked by the spec).
    """
    dim = len(kernel_size)
    total = dim + spec.dims
    if spec.positions[-1] >= total:
        raise ValueError(
            f"positions={spec.positions} do not fit layer {name!r}: it has {dim} spatial axes, "
            f"so after transduction positions must be < {total}"
        )
    pointwise = all(k == 1 for k in kernel_size)
    new_k = tuple(1 if pointwise else k for k in spec.kernel_size)
    new_s = tuple(stride[0] if s == "match" else s for s in spec.stride)
    new_d = tuple(1 if k == 1 else d for k, d in zip(new_k, spec.dilation))
    if spec.padding == "valid":
        new_p = (0,) * spec.dims
    elif spec.padding == "same":
        new_p = tuple(d * (k - 1) // 2 for k, d in zip(new_k, new_d))
    else:
        new_p = tuple(0 if pointwise else p for p in spec.padding)
    if isinstance(padding, str):
        pads = resolve_padding(padding, kernel_size, stride, dilation)
        if all(a == b for a, b in pads):
            padding = tuple(a for a, _ in pads)
        elif spec.padding == "same" and all(s == 1 for s in new_s):
            padding_full: PaddingArg = "same"  # asymmetric source 'same' kept as a string
            return Geometry(
                insert_axes(kernel_size, new_k, spec.positions),
                insert_axes(stride, new_s, spec.positions),
                padding_full,
                insert_axes(dilation, new_d, spec.positions),
                new_k,
            )
        else:
            raise ValueError(
                f"layer {name!r} uses padding={padding!r} with an even kernel (asymmetric padding), "
                "which can only be kept with padding='same' and stride 1 on the new axes"
            )
    return Geometry(
        insert_axes(kernel_size, new_k, spec.positions),
        insert_axes(stride, new_s, spec.positions),
        insert_axes(padding, new_p, spec.positions),
        insert_axes(dilation, new_d, spec.positions),
        new_k,
    )


def expand_kernel(
    kernel: torch.Tensor, new_k: Sequence[int], positions: Sequence[int], init: str
) -> torch.Tensor:
    """Insert new axes in a ``(A, B, *K)`` kernel, each holding the init profile (outer product)."""
    out = kernel
    for a in positions:  # increasing, so every axis lands at its final index
        out = out.unsqueeze(2 + a)
    dim = out.dim() - 2
    for a, k in zip(positions, new_k):
        profile = init_profile(k, init, dtype=kernel.dtype, device=kernel.device)
        out = out * profile.reshape([k if b == a else 1 for b in range(dim)])
    return out.contiguous()


class TransducedTuckerConv(TuckerConv):
    """Tucker convolution whose new (temporal) axes are a separable profile of the source core.

    The effective core is ``core[o, i, *K_old]`` times ``temporal_factors[j][o, i, k_j]`` along
    each new axis ``temporal_axes[j]``: the source core is untouched by the new axes, and the
    temporal factors (``R_out * R_in * K_j`` parameters each) are what the temporal phase trains.
    With a delta profile it is exactly the source layer applied frame by frame.
    """

    def __init__(
        self, source: TuckerConv, geometry: Geometry, positions: Sequence[int], init: str
    ) -> None:
        core = source.core.detach()
        super().__init__(
            source.in_channels, source.out_channels, geometry.kernel_size,
            dim=len(geometry.kernel_size), rank=source.rank, stride=geometry.stride,
            padding=geometry.padding, dilation=geometry.dilation, bias=source.bias is not None,
            device=core.device, dtype=core.dtype,
        )  # fmt: skip
        kw = {"device": core.device, "dtype": core.dtype}
        factors = {a: init_profile(self.kernel_size[a], init, **kw).expand(*self.rank, -1)
                   for a in positions}  # fmt: skip
        if isinstance(source, TransducedTuckerConv):  # transduced again: keep its factors
            old_axes = remap_axes(source.temporal_axes, positions, self.dim)
            factors.update(zip(old_axes, (f.detach() for f in source.temporal_factors)))
        self.temporal_axes = tuple(sorted(factors))
        self.core = nn.Parameter(core.clone())
        self.temporal_factors = nn.ParameterList(
            nn.Parameter(factors[a].clone()) for a in self.temporal_axes
        )
        with torch.no_grad():
            self.in_factor.copy_(source.in_factor)
            self.out_factor.copy_(source.out_factor)
            if self.bias is not None:
                self.bias.copy_(source.bias)

    def reset_parameters(self, kernel_var: float | None = None) -> None:
        """Source-layer initialisation of the core; constant temporal profiles."""
        super().reset_parameters(kernel_var)
        if "temporal_factors" in self._modules:
            with torch.no_grad():
                for factor in self.temporal_factors:
                    factor.fill_(1.0)

    def effective_core(self) -> torch.Tensor:
        """The full core ``(R_out, R_in, *kernel_size)`` the convolution uses."""
        core = self.core
        for a in self.temporal_axes:
            core = core.unsqueeze(2 + a)  # (R_out, R_in, ..., 1, ...)
        for a, factor in zip(self.temporal_axes, self.temporal_factors):
            shape = [*self.rank] + [self.kernel_size[b] if b == a else 1 for b in range(self.dim)]
            core = core * factor.reshape(shape)
        return core

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return HF.tucker_conv(
            x, self.effective_core(), self.in_factor, self.out_factor, self.bias,
            self.stride, self.padding, self.dilation,
        )  # fmt: skip

    def to_dense(self) -> torch.Tensor:
        """The equivalent dense kernel ``(T, C, *K)``."""
        return HF.tucker_to_dense(self.effective_core(), self.in_factor, self.out_factor)

    def to_tucker(self) -> TuckerConv:
        """A plain :class:`TuckerConv` with the full effective core (every core entry free)."""
        core = self.effective_core().detach()
        layer = TuckerConv(
            self.in_channels, self.out_channels, self.kernel_size, dim=self.dim, rank=self.rank,
            stride=self.stride, padding=self.padding, dilation=self.dilation,
            bias=self.bias is not None, device=core.device, dtype=core.dtype,
        )  # fmt: skip
        with torch.no_grad():
            layer.core.copy_(core)
            layer.in_factor.copy_(self.in_factor)
            layer.out_factor.copy_(self.out_factor)
            if layer.bias is not None:
                layer.bias.copy_(self.bias)
        return layer


class ConvNd(nn.modules.conv._ConvNd):
    """Dense convolution (zero padding) for any number of spatial axes, via :func:`conv_nd`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, ...],
        stride: tuple[int, ...],
        padding: PaddingArg,
        dilation: tuple[int, ...],
        groups: int = 1,
        bias: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, False,
            (0,) * len(kernel_size), groups, bias, "zeros", device, dtype,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return HF.conv_nd(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class PerFrame(nn.Module):
    """Apply ``module`` (made for the source dimensionality) at every position of the new axes.

    Args:
        module: the source module (pooling, adaptive pooling, instance norm, flatten...).
        axes: the new axes, as spatial-axis indices of the input.
        restore: put the new axes back among the spatial axes of an ``(N, C, *)`` output;
            False keeps them right after the batch axis, ``(N, *new, *out)`` (for flatten).
    """

    def __init__(self, module: nn.Module, axes: Sequence[int], restore: bool = True) -> None:
        super().__init__()
        self.module = module
        self.axes = tuple(axes)
        self.restore = restore

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, spatial = len(self.axes), x.dim() - 2
        if spatial <= self.axes[-1]:
            raise ValueError(
                f"{type(self.module).__name__} after transduction expects new axes {self.axes} among "
                f"the spatial axes of an (N, C, *spatial) input, got shape {tuple(x.shape)}"
            )
        new = [2 + a for a in self.axes]
        old = [d for d in range(2, x.dim()) if d not in new]
        y = x.permute(0, *new, 1, *old)  # (N, *new, C, *old)
        lead = y.shape[: 1 + k]
        out = self.module(y.reshape(-1, *y.shape[1 + k :]))  # (N * prod(new), C, *old_out)
        out = out.reshape(*lead, *out.shape[1:])  # (N, *new, C, *old_out)
        if not self.restore:
            return out
        order = [0, 1 + k]
        old_iter = iter(range(2 + k, out.dim()))
        order += [
            1 + self.axes.index(a) if a in self.axes else next(old_iter) for a in range(spatial)
        ]
        return out.permute(order)  # (N, C, *spatial_out) with new axes back in place

    def extra_repr(self) -> str:
        return f"axes={self.axes}, restore={self.restore}"


class ChannelDropout(nn.Module):
    """Drop whole channels of an ``(N, C, *)`` input (``nn.Dropout2d`` semantics, any dim)."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = p
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = F.dropout(x.new_ones(x.shape[0], x.shape[1], *([1] * (x.dim() - 2))), self.p, True)
        return x.mul_(mask) if self.inplace else x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
