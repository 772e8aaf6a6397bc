"""Factorized convolution modules with an ``nn.ConvNd``-like signature, for any number of axes.

:class:`CPConv` is the paper's higher-order CP convolution (eq. 7 / Algorithm 1) and
:class:`TuckerConv` its Tucker (bottleneck) counterpart (eq. 4; defined in
:mod:`hoconv._tucker_conv`, re-exported here). Both are thin wrappers over
:mod:`hoconv.functional`; ``to_dense`` / ``from_dense`` convert to and from dense kernels.

Initialisation: every stage preserves the variance of its input (``in_factor`` ~ N(0, 1/C),
each ``kernel_factors[i]`` ~ N(0, 1/K_i), ``weights`` = 1, Tucker ``core`` ~ N(0, 1/(R_in prod K))),
and ``out_factor`` is scaled so the reconstructed dense kernel has the variance of PyTorch's
default ``nn.ConvNd`` initialisation, ``1 / (3 fan_in)``; ``reset_parameters(kernel_var=...)``
sets another target (e.g. ``2 / fan_out`` for Kaiming). The bias follows ``nn.ConvNd``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from hoconv import _fast
from hoconv import functional as HF
from hoconv import rank as R
from hoconv._checks import (
    PaddingArg,
    prod,
    resolve_padding,
)
from hoconv._conv_base import FactorizedConv, dense_source
from hoconv._fast.plan import plan
from hoconv._tucker_conv import TuckerConv
from hoconv.decompose import cp_decompose_kernel

_ACTIVATIONS = ("relu", "prelu")


class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the channel axis of an ``(N, C, *)`` input with any number of trailing axes."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(
                f"BatchNorm expects an (N, C, *) input, got shape {tuple(input.shape)}"
            )


class CPConv(FactorizedConv):
    """Higher-order CP convolution: 1x1 to rank R, a depthwise 1-D conv per axis, 1x1 back.

    Args:
        in_channels: input channels C.
        out_channels: output channels T.
        kernel_size: int or one size per axis.
        dim: number of spatial axes (any >= 1).
        rank: int, float (fraction of the dense parameter count) or ``"same"``.
        stride: int or per axis.
        padding: int, per axis, ``"same"`` or ``"valid"``.
        dilation: int or per axis.
        bias: add a learned bias.
        norm: rank-space BatchNorm after each 1-D conv (Psi of Algorithm 1).
        activation: rank-space ``"relu"`` or ``"prelu"`` after each 1-D conv (after the norm).
        skip: add the skip path ``x ×_0 U(S)`` (needs output size == ceil(input / stride)).
        device: parameter device.
        dtype: parameter dtype.
        implementation: ``"auto"`` (per input, the dispatch plan :mod:`hoconv._fast.plan`;
            ``layer.route(x)`` says what it chose and why), ``"plain"``
            (:mod:`hoconv.functional`), ``"fast"`` (:mod:`hoconv._fast`) or ``"dense"``
            (the reconstructed kernel through the dense convolution); same results. None
            (default): follow :func:`hoconv.set_implementation` (else ``"auto"``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        dim: int,
        rank: R.RankArg = "same",
        stride: int | Sequence[int] = 1,
        padding: PaddingArg = 0,
        dilation: int | Sequence[int] = 1,
        bias: bool = True,
        norm: bool = False,
        activation: str | None = None,
        skip: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        implementation: str | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, dim, stride, padding, dilation)
        self.implementation = implementation  # validated by the property
        if implementation == "dense" and (norm or activation is not None):
            raise ValueError(
                "implementation='dense' needs a linear layer: no norm / activation (Psi) between "
                "the 1-D convolutions"
            )
        if activation is not None and activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be None, 'relu' or 'prelu', got {activation!r}")
        if skip:
            self._check_skip_geometry()
        rank = R.cp_rank(rank, in_channels, out_channels, self.kernel_size)
        kw = {"device": device, "dtype": dtype}
        self.weights = nn.Parameter(torch.empty(rank, **kw))
        self.in_factor = nn.Parameter(torch.empty(rank, in_channels, **kw))
        self.kernel_factors = nn.ParameterList(
            nn.Parameter(torch.empty(rank, k, **kw)) for k in self.kernel_size
        )
        self.out_factor = nn.Parameter(torch.empty(out_channels, rank, **kw))
        self.bias = nn.Parameter(torch.empty(out_channels, **kw)) if bias else None
        self.skip_factor = (
            nn.Parameter(torch.empty(out_channels, in_channels, **kw)) if skip else None
        )
        self.psi = (
            nn.ModuleList(_psi(rank, norm, activation, kw) for _ in range(dim))
            if norm or activation
            else None
        )
        self.reset_parameters()

    @property
    def rank(self) -> int:
        return self.weights.shape[0]

    @property
    def implementation(self) -> str:
        """The implementation this layer runs: its own, else :func:`hoconv.get_implementation`."""
        own = self.__dict__.get("_implementation", self.__dict__.get("implementation"))
        return own if own is not None else _fast.get_implementation()

    @implementation.setter
    def implementation(self, name: str | None) -> None:
        if name is not None:
            _fast.check_implementation(name)
            if name == "dense" and getattr(self, "psi", None) is not None:
                raise ValueError("implementation='dense' needs a layer without norm / activation")
        self.__dict__["_implementation"] = name

    @property
    def own_implementation(self) -> str | None:
        """The implementation set on this layer (None: it follows the process-wide switch)."""
        return self.__dict__.get("_implementation", self.__dict__.get("implementation"))

    def route(self, x: torch.Tensor) -> _fast.Route:
        """The dispatch plan's route for ``x``: path, schedule, native kernels, and why."""
        return plan(self, x)

    @property
    def is_linear(self) -> bool:
        """True when the layer is a plain CP convolution (no Psi, no skip): ``to_dense`` is exact."""
        return self.psi is None and self.skip_factor is None

    def _check_skip_geometry(self) -> None:
        pads = resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation)
        for axis, (k, d, p) in enumerate(zip(self.kernel_size, self.dilation, pads)):
            if sum(p) != d * (k - 1):
                raise ValueError(
                    f"skip=True needs 'same'-like padding (total dilation*(kernel-1) = {d * (k - 1)}) so the "
                    f"skip path and the convolution have equal sizes; axis {axis} has padding {p}"
                )

    def reset_parameters(self, kernel_var: float | None = None) -> None:
        """Variance-preserving stages; the dense kernel gets ``kernel_var`` (default ``1/(3 fan_in)``)."""
        kernel_var = 1.0 / (3 * self.fan_in) if kernel_var is None else kernel_var
        with torch.no_grad():
            nn.init.ones_(self.weights)
            nn.init.normal_(self.in_factor, 0.0, 1.0 / math.sqrt(self.in_channels))
            for factor in self.kernel_factors:
                nn.init.normal_(factor, 0.0, 1.0 / math.sqrt(factor.shape[1]))
            nn.init.normal_(self.out_factor, 0.0, math.sqrt(kernel_var * self.fan_in / self.rank))
            if self.skip_factor is not None:
                nn.init.normal_(self.skip_factor, 0.0, math.sqrt(kernel_var))
        self._bias_init(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        route = plan(self, x)
        impl = route.path
        args = (x, self.weights, self.in_factor, list(self.kernel_factors), self.out_factor)
        geometry = (self.bias, self.stride, self.padding, self.dilation)
        if impl == "dense":  # the reconstructed kernel through the dense convolution
            out = HF.conv_nd(x, self.to_dense(), *geometry)
        elif self.psi is None and impl == "fast":
            out = _fast.cp_conv(*args, *geometry, schedule=route.schedule)
        elif self.psi is None:
            out = HF.cp_conv(*args, *geometry)
        elif impl == "fast":
            out = _fast.cp_conv_stages(*args, *geometry, list(self.psi))
        else:
            out = self._forward_with_psi(x)
        if self.skip_factor is not None:
            strided = x[(slice(None), slice(None), *(slice(None, None, s) for s in self.stride))]
            out = out + HF.contract_channels(strided, self.skip_factor)
        return out

    def _forward_with_psi(self, x: torch.Tensor) -> torch.Tensor:
        pads = resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation)
        h = HF.contract_channels(x, self.in_factor)  # (N, R, *spatial)
        for axis, (factor, psi) in enumerate(zip(self.kernel_factors, self.psi)):
            h = HF.depthwise_axis_conv(
                h, factor, axis, self.stride[axis], pads[axis], self.dilation[axis]
            )
            h = psi(h)
        return HF.contract_channels(h, self.out_factor * self.weights, self.bias)

    def dense_ratio(self, input_shape: Sequence[int]) -> float:
        """MACs of the dense route (kernel reconstruction + dense conv) over this layer's MACs."""
        kernel = prod(self.kernel_size) * self.in_channels * self.out_channels
        dense = kernel * (input_shape[0] * prod(self._output_shape(input_shape)) + self.rank)
        return dense / max(1, self.macs(input_shape))

    def to_dense(self) -> torch.Tensor:
        """The equivalent dense kernel ``(T, C, *K)``, weights folded in (exact when ``is_linear``)."""
        return HF.cp_to_dense(
            self.weights, self.in_factor, list(self.kernel_factors), self.out_factor
        )

    def macs(self, input_shape: Sequence[int]) -> int:
        """Multiply-accumulates of a forward pass on ``input_shape``, stage by stage."""
        n, sizes = input_shape[0], list(input_shape[2:])
        total = n * self.rank * self.in_channels * prod(sizes)
        out_sizes = self._output_shape(input_shape)
        for axis, k in enumerate(self.kernel_size):
            sizes[axis] = out_sizes[axis]
            total += n * self.rank * k * prod(sizes)
        total += n * self.out_channels * self.rank * prod(out_sizes)
        if self.skip_factor is not None:
            total += n * self.out_channels * self.in_channels * prod(out_sizes)
        return total

    @classmethod
    def from_dense(
        cls,
        conv_or_kernel: nn.Module | torch.Tensor,
        rank: R.RankArg,
        *,
        stride: int | Sequence[int] | None = None,
        padding: PaddingArg | None = None,
        dilation: int | Sequence[int] | None = None,
        bias: torch.Tensor | None = None,
        seed: int = 0,
        n_iter_max: int = 100,
        tol: float = 1e-8,
        restarts: int = 1,
        implementation: str | None = None,
    ) -> CPConv:
        """Decompose a trained ``nn.ConvNd`` (or a kernel ``(T, C, *K)`` of any order) with CP (parafac).

        Stride, padding, dilation and bias are taken from the conv unless given. The relative
        reconstruction error is stored in ``layer.decomposition_error``. A rank above the
        kernel's largest useful CP rank (``prod(shape) / max(shape)``: an exact
        decomposition never needs more) is lowered to it with a warning; an all-zero kernel
        gives an exact zero layer (``weights`` all 0). ``implementation``:
        the layer's own (None: it follows :func:`hoconv.set_implementation`).
        """
        if implementation is not None:
            _fast.check_implementation(implementation)
        kernel, geometry = dense_source(conv_or_kernel, stride, padding, dilation, bias)
        t, c, *ksize = kernel.shape
        r = R.cp_rank(rank, c, t, ksize)
        useful = kernel.numel() // max(kernel.shape)
        if r > useful:
            warnings.warn(
                f"CP rank {r} is above the largest useful rank {useful} of a "
                f"{tuple(kernel.shape)} kernel; using {useful}",
                stacklevel=2,
            )
            r = useful
        weights, in_f, kernel_fs, out_f, error = cp_decompose_kernel(
            kernel, r, seed=seed, n_iter_max=n_iter_max, tol=tol, restarts=restarts
        )
        tensors = {
            "weights": weights,
            "in_factor": in_f,
            "kernel_factors": kernel_fs,
            "out_factor": out_f,
        }
        layer = cls._from_decomposition(kernel, geometry, r, tensors, error)
        layer.implementation = implementation
        return layer


def use_implementation(module: nn.Module, implementation: str | None) -> nn.Module:
    """Set ``implementation`` on every :class:`CPConv` in ``module`` (None: follow the switch).

    Returns:
        ``module`` (changed in place).
    """
    if implementation is not None:
        _fast.check_implementation(implementation)
    for layer in module.modules():
        if isinstance(layer, CPConv):
            layer.implementation = implementation
    return module


def _psi(rank: int, norm: bool, activation: str | None, kw: dict) -> nn.Sequential:
    """Rank-space non-linearity Psi: BatchNorm then ReLU / PReLU."""
    parts: list[nn.Module] = [BatchNorm(rank, **kw)] if norm else []
    if activation == "relu":
        parts.append(nn.ReLU())
    elif activation == "prelu":
        parts.append(nn.PReLU(rank, **kw))
    return nn.Sequential(*parts)


__all__ = ["BatchNorm", "CPConv", "TuckerConv", "use_implementation"]
