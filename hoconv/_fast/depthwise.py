"""Depthwise (one filter per channel) convolutions on channels-last ``(N, *spatial, R)`` tensors.

A CP kernel's spatial part is separable, so the chain of 1-D depthwise convolutions over the
axes equals one depthwise convolution with the outer-product kernel. Here the axes are cut
into *blocks* of at most three axes, and each block runs in one call on the channels-last
data (no layout change):

- stride 1, float32, ranks that are multiples of 16, given the block's per-axis factors: the
  native separable conv of :mod:`hoconv._fast.native` (three 1-D passes through a scratch in
  L2);
- otherwise one oneDNN depthwise ``conv2d``/``conv3d`` with the outer-product kernel.

The backward is hand-written: the input gradient (:func:`block_input_grad`) is the forward
convolution with the flipped kernel; the kernel gradient (:func:`block_weight_grad`) is the
native kernel, or a convolution of the input with the output gradient used as a (large)
kernel. All are far faster on CPU than PyTorch's grouped-convolution backward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hoconv._fast import native
from hoconv._fast.plan import active, native_depthwise, native_weight_grad

_CONV = {2: F.conv2d, 3: F.conv3d}


@dataclass(frozen=True)
class Block:
    """A run of consecutive spatial axes ``[start, stop)`` convolved in one depthwise pass."""

    start: int
    stop: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]


def make_blocks(
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    max_axes: int = 3,
) -> tuple[Block, ...]:
    """Cut the spatial axes into blocks a 2-D / 3-D depthwise convolution can run.

    The last block holds up to ``max_axes`` axes; earlier ones up to ``max_axes - 1`` because
    the axes after them are merged into one extra (kernel 1) axis.
    """
    if max_axes < 2:
        raise ValueError(f"max_axes must be >= 2, got {max_axes}")
    dim = len(kernel)
    bounds = []
    stop = dim
    width = max_axes
    while stop > 0:
        start = max(0, stop - width)
        bounds.append((start, stop))
        stop, width = start, max_axes - 1
    return tuple(
        Block(a, b, kernel[a:b], stride[a:b], pads[a:b], dilation[a:b]) for a, b in reversed(bounds)
    )


def out_len(size: int, k: int, s: int, pad: tuple[int, int], d: int) -> int:
    """Output length of one axis: size, kernel, stride, (before, after) padding, dilation."""
    return (size + pad[0] + pad[1] - d * (k - 1) - 1) // s + 1


def block_out_spatial(spatial: tuple[int, ...], block: Block) -> tuple[int, ...]:
    """Spatial shape after convolving ``block``'s axes."""
    out = list(spatial)
    for i, axis in enumerate(range(block.start, block.stop)):
        out[axis] = out_len(
            spatial[axis], block.kernel[i], block.stride[i], block.pads[i], block.dilation[i]
        )
    return tuple(out)


def _conv_view(h: torch.Tensor, spatial: tuple[int, ...], block: Block) -> torch.Tensor:
    """View channels-last ``h`` (N, *spatial, R) as a channels-last 2-D/3-D conv input."""
    n, rank = h.shape[0], h.shape[-1]
    lead = n * _prod(spatial[: block.start])
    axes = list(spatial[block.start : block.stop])
    trail = _prod(spatial[block.stop :])
    if block.stop < len(spatial) or len(axes) == 1:
        axes.append(trail)
    v = h.reshape(lead, *axes, rank)  # (N', *block axes, [trail], R)
    return v.movedim(-1, 1)  # (N', R, *conv axes), channels-last strides


def _geometry(block: Block, conv_dims: int):
    """Per-conv-axis kernel, stride, pads and dilation (a trailing kernel-1 axis if needed)."""
    extra = conv_dims - len(block.kernel)
    return (
        block.kernel + (1,) * extra,
        block.stride + (1,) * extra,
        block.pads + ((0, 0),) * extra,
        block.dilation + (1,) * extra,
    )


def _pad(v: torch.Tensor, pads: tuple[tuple[int, int], ...]) -> torch.Tensor:
    if not any(p for pair in pads for p in pair):
        return v
    return F.pad(v, [p for pair in reversed(pads) for p in pair])


def _conv(v, weight, stride, pads, dilation):
    """Depthwise conv of a (N', R, *axes) tensor; symmetric pads go to the conv, others to F.pad."""
    if all(a == b for a, b in pads):
        padding = tuple(a for a, _ in pads)
    else:
        v, padding = _pad(v, pads), (0,) * len(pads)
    return _CONV[v.dim() - 2](v, weight, None, stride, padding, dilation, v.shape[1])


def _to_channels_last(out: torch.Tensor, n: int, spatial_out: tuple[int, ...]) -> torch.Tensor:
    """(N', R, *conv axes) -> contiguous (N, *spatial_out, R)."""
    return out.movedim(1, -1).contiguous().view(n, *spatial_out, out.shape[1])


def block_forward(
    h: torch.Tensor,
    weight: torch.Tensor,
    spatial: tuple[int, ...],
    block: Block,
    factors: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Depthwise convolution of channels-last ``h`` (N, *spatial, R) over ``block``'s axes.

    Args:
        h: input, contiguous ``(N, *spatial, R)``.
        weight: depthwise kernel ``(R, *block.kernel)``.
        spatial: spatial shape of ``h``.
        block: the axes and their geometry.
        factors: optional per-axis factors ``(R, K_i)`` whose outer product is ``weight``:
            stride-1 float32 convs then run as the native separable kernel (one 1-D pass per
            axis instead of all ``prod(K)`` taps).

    Returns:
        Contiguous ``(N, *spatial_out, R)``.
    """
    v = _conv_view(h, spatial, block)
    kernel, stride, pads, dilation = _geometry(block, v.dim() - 2)
    spatial_out = block_out_spatial(spatial, block)
    if factors is not None and _separable_ok(v, kernel, stride):
        out_axes = _view_axes(spatial_out, block)
        out = _separable(v, factors, kernel, out_axes, [a for a, _ in pads], dilation)
        return out.view(h.shape[0], *spatial_out, h.shape[-1])
    out = _conv(v, weight.reshape(weight.shape[0], 1, *kernel), stride, pads, dilation)
    return _to_channels_last(out, h.shape[0], spatial_out)


def _separable_ok(v: torch.Tensor, kernel, stride) -> bool:
    """Whether :func:`native.depthwise_separable` takes this conv view (N', R, *axes)."""
    return all(s == 1 for s in stride) and native_depthwise(v.dtype, v.device, v.shape[1], kernel)


def _separable(v, factors, kernel, out_axes, before, dilation) -> torch.Tensor:
    """The native separable conv of a conv view (N', R, *axes), as (N', *out 5-D axes, R).

    ``factors``: the block's per-axis ``(R, K_i)`` kernel factors; the view's extra axes
    (kernel 1) get a factor of ones.
    """
    pad, rank = 3 - len(kernel), v.shape[1]
    ones = v.new_ones(rank, 1)
    full = [ones] * pad + list(factors) + [ones] * (len(kernel) - len(factors))
    return native.depthwise_separable(
        _as5d(v, pad), tuple(full), (1,) * pad + tuple(out_axes),
        (0,) * pad + tuple(before), (1,) * pad + tuple(dilation),
    )  # fmt: skip


def _as5d(t: torch.Tensor, pad: int) -> torch.Tensor:
    """A channels-last conv view (N', R, *axes) as (N', [1,] *axes, R), without a copy."""
    return t.movedim(1, -1).reshape(t.shape[0], *([1] * pad), *t.shape[2:], t.shape[1])


def block_weight_grad(
    grad: torch.Tensor,
    h: torch.Tensor,
    weight: torch.Tensor,
    spatial: tuple[int, ...],
    block: Block,
) -> torch.Tensor:
    """Gradient of :func:`block_forward` w.r.t. its ``weight`` (R, *block.kernel)."""
    v = _conv_view(h, spatial, block)
    g = _conv_view(grad.contiguous(), block_out_spatial(spatial, block), block)
    kernel, stride, pads, dilation = _geometry(block, v.dim() - 2)
    grad_w = _native_weight_grad(g, v, kernel, stride, pads, dilation)
    if grad_w is not None:
        return grad_w.reshape(weight.shape).to(weight.dtype)
    w = weight.reshape(weight.shape[0], 1, *kernel)
    return _weight_grad(g, v, w, kernel, stride, pads, dilation).reshape(weight.shape)


def _native_weight_grad(g, v, kernel, stride, pads, dilation) -> torch.Tensor | None:
    """The kernel gradient by :mod:`hoconv._fast.native` (stride 1, float32 on CPU), else None.

    ``g`` and ``v`` are the channels-last conv views (N', R, *axes).
    """
    if any(s != 1 for s in stride) or not native_weight_grad(v.dtype, v.device):
        return None
    pad = 3 - len(kernel)
    return native.depthwise_weight_grad(
        _as5d(g, pad), _as5d(v, pad), (1,) * pad + tuple(kernel),
        (0,) * pad + tuple(a for a, _ in pads), (1,) * pad + tuple(dilation),
    )  # fmt: skip


def block_input_grad(
    grad: torch.Tensor,
    weight: torch.Tensor,
    spatial: tuple[int, ...],
    block: Block,
    factors: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Gradient of :func:`block_forward` w.r.t. its input: contiguous ``(N, *spatial, R)``.

    ``factors``: as for :func:`block_forward`.
    """
    n, rank = grad.shape[0], weight.shape[0]
    g = _conv_view(grad.contiguous(), block_out_spatial(spatial, block), block)
    in_shape = (g.shape[0], rank, *_view_axes(spatial, block))  # conv view of the input
    kernel, stride, pads, dilation = _geometry(block, g.dim() - 2)
    if factors is not None and _separable_ok(g, kernel, stride):  # the flipped-kernel conv
        back = [d * (k - 1) - a for k, (a, _), d in zip(kernel, pads, dilation)]
        flipped = [f.flip(1) for f in factors]
        out = _separable(g, flipped, kernel, in_shape[2:], back, dilation)
        return out.view(n, *spatial, rank)
    w = weight.reshape(rank, 1, *kernel)
    grad_in = _input_grad(g, in_shape, w, kernel, stride, pads, dilation)
    return _to_channels_last(grad_in, n, spatial)


def _view_axes(spatial: tuple[int, ...], block: Block) -> list[int]:
    """Conv axes of :func:`_conv_view` for a tensor of ``spatial`` shape."""
    axes = list(spatial[block.start : block.stop])
    if block.stop < len(spatial) or len(axes) == 1:
        axes.append(_prod(spatial[block.stop :]))
    return axes


def _input_grad(g, in_shape, w, kernel, stride, pads, dilation):
    """Input gradient: the flipped-kernel convolution when stride is 1, else aten's backward."""
    back = tuple((d * (k - 1) - a, d * (k - 1) - b) for k, (a, b), d in zip(kernel, pads, dilation))
    if all(s == 1 for s in stride) and all(p >= 0 for pair in back for p in pair):
        flipped = w.flip(list(range(2, w.dim())))
        return _conv(g, flipped, stride, back, dilation)
    symmetric = all(a == b for a, b in pads)
    padded = in_shape[2:] if symmetric else [s + a + b for s, (a, b) in zip(in_shape[2:], pads)]
    # only the shape of the input is read; channels-last strides keep oneDNN on its nhwc kernel
    shape = (*in_shape[:2], *padded)
    vp = torch.empty_strided(shape, _channels_last_strides(shape), dtype=g.dtype, device=g.device)
    padding = [a for a, _ in pads] if symmetric else [0] * len(kernel)
    out = torch.ops.aten.convolution_backward(
        g, vp, w, None, stride, padding, dilation, False, [0] * len(kernel),
        w.shape[0], [True, False, False],
    )[0]  # fmt: skip
    if symmetric:
        return out
    index = tuple(slice(a, a + size) for (a, _), size in zip(pads, in_shape[2:]))
    return out[(slice(None), slice(None), *index)]


def _channels_last_strides(shape) -> tuple[int, ...]:
    """Strides of a channels-last tensor of ``shape`` (N, C, *axes)."""
    strides = [0] * len(shape)
    step = shape[1]
    strides[1] = 1
    for i in reversed(range(2, len(shape))):
        strides[i] = step
        step *= shape[i]
    strides[0] = step
    return tuple(strides)


def _weight_grad(g, v, w, kernel, stride, pads, dilation):
    """Kernel gradient: per sample and slab of rows, the input convolved with the output grad.

    ``dW[r, k] = sum_n sum_o g[n, r, o] v_pad[n, r, o * stride + k * dilation]``: a depthwise
    conv of ``v_pad`` with ``g`` as the kernel (stride ``dilation``, dilation ``stride``),
    summed over samples and over slabs of output rows along the first conv axis (each slab
    reads its input rows plus a halo, so the data of one call stays in cache:
    ``active().slab_bytes``, in L2 while every kernel tap re-reads it). Many small
    samples (a merged leading axis) use aten's backward instead.
    """
    rank = w.shape[0]
    if g.shape[0] > 16 or any(s != 1 for s in stride):
        # strided: the slab conv would need the output grad as a dilated kernel (oneDNN's
        # slow reference path, measured 8-14x slower than aten's weight backward)
        symmetric = all(a == b for a, b in pads)
        padding = [a for a, _ in pads] if symmetric else [0] * len(kernel)
        return torch.ops.aten.convolution_backward(
            g, v if symmetric else _pad(v, pads), w, None, stride, padding, dilation, False,
            [0] * len(kernel), rank, [False, True, False],
        )[1]  # fmt: skip
    rest = pads[1:]
    if all(a == b for a, b in rest):  # let the conv pad the other axes (no padded copy)
        padding = (0, *(a for a, _ in rest))
    else:
        v, padding = _pad(v, ((0, 0), *rest)), 0
    conv = _CONV[v.dim() - 2]
    k0, s0, d0, (before, _) = kernel[0], stride[0], dilation[0], pads[0]
    length, n_out = v.shape[2], g.shape[2]
    rows = max(1, active().slab_bytes // max(1, v[0, :, 0].numel() * v.element_size()) // s0)
    index = (0, slice(None), *(slice(0, k) for k in kernel))
    acc = torch.float32 if w.element_size() < 4 else w.dtype  # sum half-precision parts in fp32
    total = w.new_zeros(rank, *kernel, dtype=acc)
    for n in range(g.shape[0]):
        for o0 in range(0, n_out, rows):
            o1 = min(n_out, o0 + rows)
            lo = o0 * s0 - before  # input rows [lo, hi) of this slab, in unpadded coordinates
            hi = (o1 - 1) * s0 + d0 * (k0 - 1) + 1 - before
            src = v[n : n + 1, :, max(lo, 0) : min(hi, length)]
            if lo < 0 or hi > length:  # the slab reaches into the zero padding of axis 0
                src = F.pad(src, [0, 0] * (v.dim() - 3) + [max(0, -lo), max(0, hi - length)])
            kern = g[n, :, o0:o1].unsqueeze(1).contiguous()  # plain (R, 1, rows, ...) kernel
            total += conv(src, kern, None, dilation, padding, stride, rank)[index]
    return total.to(w.dtype).unsqueeze(1)  # (R, 1, *kernel)


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out
