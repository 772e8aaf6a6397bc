"""Higher-order transduction: turn an N-D model into an (N+K)-D one (paper section 4, eq. 8).

``transduce(model, dims=K)`` returns a new model in which every factorized convolution gains
K new axes (by default new leading spatial axes: ``(N, C, H, W) -> (N, C, T, H, W)``) and
every other layer with a dimensionality follows:

============================  ===============================================================
source layer                  transduced layer
============================  ===============================================================
``CPConv``                    ``CPConv`` with a new kernel factor ``(R, K_t)`` per new axis;
                              its Psi entry on a new axis is ``nn.Identity`` (so it stays exact)
``TuckerConv``                :class:`TransducedTuckerConv`: effective core
                              ``core[o, i, *K] * u[o, i, k_t]`` (separable new axes)
dense ``nn.Conv{1,2,3}d``     inflated as in I3D: ``nn.Conv{d}d`` (or :class:`ConvNd` beyond
                              3-D) whose kernel is the source kernel times the init profile
                              along each new axis
``BatchNorm{1,2,3}d``         :class:`hoconv.layers.BatchNorm` with the same state
pooling, adaptive pooling,    :class:`PerFrame`: the source module at every new-axis position
instance norm                 (kernel 1 / stride 1 on the new axes; a global adaptive pool of an
                              image model pools over space only and keeps time)
``Dropout{1,2,3}d``           :class:`ChannelDropout` (drops whole channels, any dim)
``nn.Flatten(1)``             :class:`PerFrame` without restore: ``(N, *new, features)``, so a
                              following ``nn.Linear`` gives per-frame outputs ``(N, T, out)``
anything else                 unchanged (activations, ``nn.Linear``, ``nn.Dropout``...)
============================  ===============================================================

A pointwise layer (kernel 1 everywhere) stays pointwise on the new axes. ``stride="match"``
gives each layer a temporal stride equal to its first spatial stride (convolutions only;
pooling never pools over the new axes), as in 3-D ResNets with temporal downsampling.

Initialisation of the new axes: ``"center"`` (a delta at the kernel centre: on a clip of
identical frames the transduced model gives, at every frame, exactly the source model's output
on that frame; a delta ignores its zero-padded neighbours, so this holds at border frames
too), ``"ones"`` (the paper's constant init) and ``"average"`` (``1 / K_t``, I3D's
scale-preserving inflation). Odd new kernels only with ``"center"`` or ``padding="same"``.

Models whose ``forward`` reshapes tensors itself (``torch.flatten``, ``view``...) need a hook:
any module (the root included) with a method ``transduce_hook(spec, convert)`` is replaced by
what it returns; ``spec`` is the resolved :class:`TransductionSpec` and ``convert(module)`` the
generic rule above (apply it to the children you don't handle yourself).

Training phases (paper section 5): :func:`phase` ``"temporal"`` trains only the new factors
(CP: the new kernel factors; Tucker: ``temporal_factors``; dense convs count as source
parameters), ``"all"`` trains everything. BatchNorm running statistics still update in
train mode. The returned model records ``transduction_spec`` (the keyword arguments of this
call) and ``transduction_history`` (all of them, for models transduced more than once);
:func:`rebuild` recreates the architecture from the base model to load a checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from hoconv._checks import PaddingArg, as_tuple
from hoconv._transduced import (
    INITS,
    ChannelDropout,
    ConvNd,
    PerFrame,
    TransducedTuckerConv,
    TransductionSpec,
    expand_kernel,
    init_profile,
    insert_axes,
    new_geometry,
    remap_axes,
)
from hoconv.layers import BatchNorm, CPConv, TuckerConv

__all__ = [
    "ChannelDropout",
    "ConvNd",
    "PerFrame",
    "TransducedTuckerConv",
    "TransductionSpec",
    "phase",
    "phase_parameter_counts",
    "rebuild",
    "resolve_spec",
    "temporal_parameters",
    "transduce",
]

_PER_FRAME = (
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
    nn.modules.instancenorm._InstanceNorm,
)
_CHANNEL_DROPOUT = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def resolve_spec(
    dims: int = 1,
    kernel_size: int | Sequence[int] = 3,
    stride: int | str | Sequence[int | str] = 1,
    padding: PaddingArg = "same",
    dilation: int | Sequence[int] = 1,
    init: str = "center",
    positions: Sequence[int] | None = None,
) -> TransductionSpec:
    """Check the arguments of :func:`transduce` and expand them to one value per new axis."""
    if isinstance(dims, bool) or not isinstance(dims, int):
        raise TypeError(f"dims must be an int >= 1 (number of new axes), got {dims!r}")
    if dims < 1:
        raise ValueError(f"dims must be >= 1 (number of new axes), got {dims}")
    ks = as_tuple(kernel_size, dims, "kernel_size")
    dil = as_tuple(dilation, dims, "dilation")
    strides = (stride,) * dims if isinstance(stride, (int, str)) else tuple(stride)
    if len(strides) != dims:
        raise ValueError(f"stride must have {dims} entries (one per new axis), got {stride!r}")
    for s in strides:
        if s != "match" and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
            raise ValueError(f"stride entries must be ints >= 1 or 'match', got {stride!r}")
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid' or ints, got {padding!r}")
        pad: str | tuple[int, ...] = padding
    else:
        pad = as_tuple(padding, dims, "padding", minimum=0)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    even = [k for k in ks if k % 2 == 0]
    if even and init == "center":
        raise ValueError(
            f"init='center' needs odd kernel sizes on the new axes (a delta at the centre), "
            f"got kernel_size={ks}"
        )
    if even and pad == "same":
        raise ValueError(
            f"padding='same' needs odd kernel sizes on the new axes (symmetric padding), got "
            f"kernel_size={ks}; use an odd kernel or explicit int padding"
        )
    return TransductionSpec(dims, ks, strides, pad, dil, init, _positions(positions, dims))


def _positions(positions: Sequence[int] | None, dims: int) -> tuple[int, ...]:
    if positions is None:
        return tuple(range(dims))
    if isinstance(positions, int):
        positions = (positions,)
    pos = tuple(positions)
    if len(pos) != dims or len(set(pos)) != dims:
        raise ValueError(f"positions must hold {dims} distinct axis indices, got {positions!r}")
    if any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in pos):
        raise ValueError(f"positions must be ints >= 0 (spatial axis indices), got {positions!r}")
    return tuple(sorted(pos))


def transduce(
    model: nn.Module,
    *,
    dims: int = 1,
    kernel_size: int | Sequence[int] = 3,
    stride: int | str | Sequence[int | str] = 1,
    padding: PaddingArg = "same",
    dilation: int | Sequence[int] = 1,
    init: str = "center",
    positions: Sequence[int] | None = None,
) -> nn.Module:
    """Return a copy of ``model`` with ``dims`` new axes in every layer (see the module docs).

    Args:
        model: source model (left untouched); must contain a CPConv or TuckerConv.
        dims: number of new axes K >= 1.
        kernel_size: kernel size of the new axes (int or one per new axis).
        stride: stride of the new axes: int, ``"match"`` or one per new axis.
        padding: ``"same"`` (odd kernels), ``"valid"`` or ints, for the new axes.
        dilation: dilation of the new axes.
        init: ``"center"`` (exact on constant clips), ``"ones"`` (paper) or ``"average"``.
        positions: spatial-axis indices of the new axes in the output (default leading).

    Returns:
        The transduced model, with ``transduction_spec`` / ``transduction_history`` attributes.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    spec = resolve_spec(dims, kernel_size, stride, padding, dilation, init, positions)
    new = copy.deepcopy(model)
    converter = _Converter(spec)
    new = converter(new)
    if converter.factorized == 0:
        raise ValueError(
            "transduce found no CPConv or TuckerConv in the model: only factorized convolutions can "
            "be transduced (use hoconv.factorize(model) first)"
        )
    history = list(getattr(model, "transduction_history", []))
    new.transduction_spec = spec.as_dict()
    new.transduction_history = [*history, spec.as_dict()]
    return new


def rebuild(base_model: nn.Module, history: dict | Sequence[dict]) -> nn.Module:
    """Recreate a transduced architecture from its base model and recorded spec(s).

    Args:
        base_model: the untransduced model (e.g. ``create_model(name)``).
        history: ``model.transduction_spec`` or ``model.transduction_history``.
    """
    specs = [history] if isinstance(history, dict) else list(history)
    if not specs:
        raise ValueError("history must hold at least one transduction spec")
    model = base_model
    for spec in specs:
        model = transduce(model, **spec)
    return model


class _Converter:
    """Recursive module replacement with the rules of the module docs (shared modules once)."""

    def __init__(self, spec: TransductionSpec) -> None:
        self.spec = spec
        self.factorized = 0
        self.memo: dict[int, nn.Module] = {}
        self.name = ""

    def __call__(self, module: nn.Module, name: str = "") -> nn.Module:
        if id(module) in self.memo:
            return self.memo[id(module)]
        self.name = name
        hook = getattr(module, "transduce_hook", None)
        if callable(hook):
            out = hook(self.spec, lambda m: self(m, name))
        else:
            out = self._rule(module, name)
            if out is not module:
                out.train(module.training)  # new modules start in train mode otherwise
        self.memo[id(module)] = out
        return out

    def _rule(self, module: nn.Module, name: str) -> nn.Module:
        if isinstance(module, CPConv):
            self.factorized += 1
            return _transduce_cp(module, self.spec, name)
        if isinstance(module, TuckerConv):
            self.factorized += 1
            geometry = _conv_geometry(module, self.spec, name)
            return TransducedTuckerConv(module, geometry, self.spec.positions, self.spec.init)
        if isinstance(module, nn.modules.conv._ConvNd):
            return _transduce_dense(module, self.spec, name)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return _to_batchnorm(module)
        if isinstance(module, _PER_FRAME):
            return PerFrame(module, self.spec.positions)
        if isinstance(module, PerFrame):
            return _per_frame_again(module, self.spec)
        if isinstance(module, _CHANNEL_DROPOUT):
            return ChannelDropout(module.p, module.inplace)
        if isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise ValueError(
                    f"cannot transduce {name!r}: nn.Flatten(start_dim={module.start_dim}, "
                    f"end_dim={module.end_dim}); only Flatten(1, -1) is supported, or give the "
                    "model a transduce_hook"
                )
            return PerFrame(module, self.spec.positions, restore=False)
        if isinstance(module, (nn.Unflatten, nn.Upsample, nn.PixelShuffle, nn.Fold, nn.Unfold)):
            raise ValueError(
                f"cannot transduce {name!r} ({type(module).__name__}) automatically; give the model "
                "(or that module's parent) a transduce_hook(spec, convert) method"
            )
        for child_name, child in module.named_children():
            setattr(module, child_name, self(child, f"{name}.{child_name}" if name else child_name))
        return module


def _conv_geometry(layer: nn.Module, spec: TransductionSpec, name: str):
    return new_geometry(
        layer.kernel_size, layer.stride, layer.padding, layer.dilation, spec, name or "<root>"
    )


def _transduce_cp(layer: CPConv, spec: TransductionSpec, name: str) -> CPConv:
    """CPConv -> CPConv with one new kernel factor (the init profile, every rank) per new axis."""
    geometry = _conv_geometry(layer, spec, name)
    ref = layer.weights
    new = CPConv(
        layer.in_channels, layer.out_channels, geometry.kernel_size, dim=len(geometry.kernel_size),
        rank=layer.rank, stride=geometry.stride, padding=geometry.padding,
        dilation=geometry.dilation, bias=layer.bias is not None,
        skip=layer.skip_factor is not None, device=ref.device, dtype=ref.dtype,
        implementation=layer.own_implementation,
    )  # fmt: skip
    kw = {"device": ref.device, "dtype": ref.dtype}
    profiles = [init_profile(k, spec.init, **kw).expand(layer.rank, k) for k in geometry.new_kernel]
    factors = insert_axes([f.detach() for f in layer.kernel_factors], profiles, spec.positions)
    new.kernel_factors = nn.ParameterList(nn.Parameter(f.clone()) for f in factors)
    with torch.no_grad():
        for dst, src in ((new.weights, layer.weights), (new.in_factor, layer.in_factor),
                         (new.out_factor, layer.out_factor), (new.bias, layer.bias),
                         (new.skip_factor, layer.skip_factor)):  # fmt: skip
            if dst is not None:
                dst.copy_(src)
    if layer.psi is not None:
        identities = [nn.Identity() for _ in spec.positions]
        new.psi = nn.ModuleList(insert_axes(list(layer.psi), identities, spec.positions))
    old = getattr(layer, "transduced_axes", ())
    new.transduced_axes = tuple(
        sorted((*remap_axes(old, spec.positions, new.dim), *spec.positions))
    )
    return new


def _transduce_dense(conv: nn.modules.conv._ConvNd, spec: TransductionSpec, name: str) -> nn.Module:
    """Inflate a dense conv: the source kernel times the init profile along each new axis."""
    if conv.transposed:
        raise ValueError(f"cannot transduce {name!r}: transposed convolutions are not supported")
    geometry = _conv_geometry(conv, spec, name)
    dim = len(geometry.kernel_size)
    weight = conv.weight.detach()
    args = (conv.in_channels, conv.out_channels, geometry.kernel_size, geometry.stride,
            geometry.padding, geometry.dilation, conv.groups, conv.bias is not None)  # fmt: skip
    kw = {"device": weight.device, "dtype": weight.dtype}
    if dim <= 3:
        cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dim - 1]
        new = cls(*args, padding_mode=conv.padding_mode, **kw)
    elif conv.padding_mode != "zeros":
        raise ValueError(
            f"cannot transduce {name!r} to {dim}-D: padding_mode={conv.padding_mode!r}, "
            "only 'zeros' is supported beyond 3-D"
        )
    else:
        new = ConvNd(*args, **kw)
    with torch.no_grad():
        new.weight.copy_(expand_kernel(weight, geometry.new_kernel, spec.positions, spec.init))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _to_batchnorm(bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    if isinstance(bn, (BatchNorm, nn.SyncBatchNorm)):  # already dimension-agnostic
        return bn
    ref = next(iter(bn.state_dict().values()), torch.empty(0))
    new = BatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                    device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)  # fmt: skip
    new.load_state_dict(bn.state_dict())
    new.train(bn.training)
    return new


def _per_frame_again(module: PerFrame, spec: TransductionSpec) -> PerFrame:
    """A PerFrame module of a model transduced a second time: more axes handled per frame."""
    total = max((*module.axes, *spec.positions)) + 1 + len(spec.positions)  # enough old slots
    old = remap_axes(module.axes, spec.positions, total)
    return PerFrame(module.module, sorted((*old, *spec.positions)), restore=module.restore)


def temporal_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters added by transduction: new CP kernel factors and Tucker temporal factors."""
    found: list[tuple[str, nn.Parameter]] = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, CPConv):
            found += [(f"{prefix}kernel_factors.{a}", module.kernel_factors[a])
                      for a in getattr(module, "transduced_axes", ())]  # fmt: skip
        elif isinstance(module, TransducedTuckerConv):
            found += [(f"{prefix}temporal_factors.{j}", f)
                      for j, f in enumerate(module.temporal_factors)]  # fmt: skip
    return found


def phase(model: nn.Module, name: str) -> dict[str, int]:
    """Set ``requires_grad`` for a training phase: ``"temporal"`` (new factors only) or ``"all"``.

    Returns:
        ``{"trainable": ..., "total": ...}`` parameter counts after the change.
    """
    if name not in ("temporal", "all"):
        raise ValueError(f"phase must be 'temporal' or 'all', got {name!r}")
    temporal = temporal_parameters(model)
    if not temporal:
        raise ValueError("the model has no transduced factors: call hoconv.transduce(model) first")
    keep = {id(p) for _, p in temporal}
    for p in model.parameters():
        p.requires_grad_(name == "all" or id(p) in keep)
    return {
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in model.parameters()),
    }


def phase_parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters trained in each phase (the paper's Table 4), without changing the model."""
    temporal = {id(p): p.numel() for _, p in temporal_parameters(model)}
    return {"temporal": sum(temporal.values()), "all": sum(p.numel() for p in model.parameters())}
