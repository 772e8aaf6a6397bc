"""Base of the factorized convolution modules: argument handling, counting, loading a decomposition."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hoconv._checks import (
    PaddingArg,
    as_tuple,
    check_channels,
    check_dim,
    check_input,
    prod,
    resolve_padding,
)


class FactorizedConv(nn.Module):
    """Shared argument handling, counting and decomposition loading of the factorized convolutions."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        dim: int,
        stride: int | Sequence[int],
        padding: PaddingArg,
        dilation: int | Sequence[int],
    ) -> None:
        super().__init__()
        self.dim = check_dim(dim)
        self.in_channels = check_channels(in_channels, "in_channels")
        self.out_channels = check_channels(out_channels, "out_channels")
        self.kernel_size = as_tuple(kernel_size, dim, "kernel_size")
        self.stride = as_tuple(stride, dim, "stride")
        self.dilation = as_tuple(dilation, dim, "dilation")
        resolve_padding(padding, self.kernel_size, self.stride, self.dilation)  # validates
        self.padding = (
            padding if isinstance(padding, str) else as_tuple(padding, dim, "padding", minimum=0)
        )

    @property
    def fan_in(self) -> int:
        return self.in_channels * prod(self.kernel_size)

    def _bias_init(self, bias: torch.Tensor | None) -> None:
        if bias is not None:
            bound = 1.0 / math.sqrt(self.fan_in)
            nn.init.uniform_(bias, -bound, bound)

    def _check(self, x: torch.Tensor) -> None:
        check_input(x, self.in_channels, self.dim)

    def _output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        pads = resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation)
        return tuple(
            (size + sum(p) - d * (k - 1) - 1) // s + 1
            for size, k, s, p, d in zip(
                input_shape[2:], self.kernel_size, self.stride, pads, self.dilation
            )
        )

    def macs(self, input_shape: Sequence[int]) -> int:
        """Multiply-accumulates of a forward pass on ``input_shape`` (each subclass counts its stages)."""
        raise NotImplementedError(f"{type(self).__name__} does not count its MACs")

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, dim={self.dim}, "
            f"rank={self.rank}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"bias={self.bias is not None}"
        )

    @classmethod
    def _from_decomposition(
        cls,
        kernel: torch.Tensor,
        geometry: dict,
        rank: int | tuple[int, int],
        tensors: dict[str, torch.Tensor | list[torch.Tensor]],
        error: float,
    ) -> FactorizedConv:
        """A layer with the geometry of a dense source, holding decomposed ``tensors`` by attribute name."""
        t, c, *ksize = kernel.shape
        layer = cls(c, t, tuple(ksize), dim=len(ksize), rank=rank, bias=geometry["bias"] is not None,
                    stride=geometry["stride"], padding=geometry["padding"], dilation=geometry["dilation"],
                    device=kernel.device, dtype=kernel.dtype)  # fmt: skip
        with torch.no_grad():
            for name, value in tensors.items():
                target = getattr(layer, name)
                for dst, src in (
                    zip(target, value)
                    if isinstance(target, nn.ParameterList)
                    else [(target, value)]
                ):
                    dst.copy_(src)
            if layer.bias is not None:
                layer.bias.copy_(geometry["bias"])
        layer.decomposition_error = error
        return layer


def dense_source(
    conv_or_kernel: nn.Module | torch.Tensor,
    stride: int | Sequence[int] | None,
    padding: PaddingArg | None,
    dilation: int | Sequence[int] | None,
    bias: torch.Tensor | None,
) -> tuple[torch.Tensor, dict]:
    """The kernel of a dense conv (or a kernel tensor) and its geometry, explicit arguments first."""
    if isinstance(conv_or_kernel, nn.modules.conv._ConvNd):
        conv = conv_or_kernel
        if conv.groups != 1:
            raise ValueError(f"from_dense needs a conv with groups=1, got groups={conv.groups}")
        if conv.transposed:
            raise ValueError("from_dense does not support transposed convolutions")
        if conv.padding_mode != "zeros":
            raise ValueError(
                f"from_dense supports padding_mode='zeros' only, got {conv.padding_mode!r}"
            )
        kernel = conv.weight.detach()
        geometry = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation,
                    "bias": None if conv.bias is None else conv.bias.detach()}  # fmt: skip
    elif isinstance(conv_or_kernel, torch.Tensor):
        kernel = conv_or_kernel.detach()
        if kernel.dim() < 3:
            raise ValueError(
                f"a kernel must have shape (T, C, *kernel_size), got {tuple(kernel.shape)}"
            )
        geometry = {"stride": 1, "padding": 0, "dilation": 1, "bias": None}
    else:
        raise TypeError(
            f"from_dense needs an nn.Conv1d/2d/3d or a kernel tensor, got {type(conv_or_kernel).__name__}"
        )
    if not kernel.is_floating_point():
        raise TypeError(
            f"from_dense needs a floating-point kernel, got dtype {kernel.dtype}; "
            "convert it first (e.g. kernel.float())"
        )
    bad = int((~torch.isfinite(kernel)).sum())
    if bad:
        raise ValueError(f"from_dense: the kernel has {bad} NaN/inf entries; cannot decompose it")
    for name, value in (
        ("stride", stride),
        ("padding", padding),
        ("dilation", dilation),
        ("bias", bias),
    ):
        if value is not None:
            geometry[name] = value
    return kernel, geometry
