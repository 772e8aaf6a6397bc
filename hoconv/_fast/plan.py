"""The one dispatch plan of the factorized convolutions: which path runs, which schedule, why.

Every rule of the choice lives here, its tuning constants in :mod:`hoconv._fast.tuning`
(re-exported here); the layers and the fast path ask and follow. :func:`plan` gives a
:class:`Route` for a layer and an input: ``path`` (``"plain"`` = :mod:`hoconv.functional`,
``"fast"`` = :mod:`hoconv._fast`, ``"dense"`` = the reconstructed kernel through the dense
convolution), ``schedule`` (the fast path's: ``"fused"``, ``"batch"``, ``"stream"`` or
``"stages"``; None on the other paths), ``native`` (whether the C kernels of
:mod:`hoconv._fast.native` run) and ``reasons``, one sentence per decision.

The rules (measurements in :class:`Tuning`, history in docs/performance.md):

- the implementation asked for (the layer's own, else :func:`set_implementation`'s, else
  ``HOCONV_IMPLEMENTATION``, else ``"auto"``) is followed as asked unless it is ``"auto"``;
- ``"auto"``: ONNX export and TorchScript tracing, non-CPU devices, dtypes without oneDNN kernels and
  layers with rank-space stages (Psi) get the plain path; a layer whose dense route costs
  at most :attr:`Tuning.dense_ratio` times its MACs gets the dense path; fewer rank-space
  activations than :attr:`Tuning.min_activations` get the plain path; the rest the fast path;
- the native kernels run only on the instruction sets where they are measured faster than
  the eager ones (:attr:`Tuning.native_faster_on`; ``HOCONV_NATIVE=1`` forces them,
  ``HOCONV_NATIVE=0`` turns them off), on float32 CPU data with ranks in whole 16-lanes;
- the fast schedule: fused where the native pass runs and its workspace fits
  (:attr:`Tuning.fused_bytes`, frames of >= :attr:`Tuning.fused_min_positions` positions),
  else stream stride-1 layers whose rank-space sample exceeds :attr:`Tuning.chunk_bytes`,
  else batch;
- under torch.compile / torch.export ``"auto"`` takes the fused pass (the ``hoconv::cp_fused``
  torch.library op) exactly where the eager plan would, else the plain path.

Routes are cached per (layer geometry, shape, dtype, device, layout, requires_grad,
instruction set, native mode, implementation, tracing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from hoconv._fast import native
from hoconv._fast.inputs import Inputs, Machine, describe, machine
from hoconv._fast.tuning import TUNING, Tuning, active, native_refusal, tuned

SCHEDULES = ("auto", "batch", "stream", "fused")
FAST_DTYPES = (torch.float32, torch.bfloat16)
MAX_TAPS = native.MAX_TAPS  # taps per axis of the native kernels (MAXK in the C code)


def native_depthwise(dtype, device, rank: int, kernel: Sequence[int], m: Machine | None = None):
    """Whether the native separable depthwise conv takes a stride-1 block of this kind.

    (Never under tracing: it is a ctypes call, not a torch.library op.)
    """
    if tracing() or dtype != torch.float32 or torch.device(device).type != "cpu" or rank % 16:
        return False
    return max(kernel) <= MAX_TAPS and native_refusal(m or machine()) is None


def native_weight_grad(dtype, device) -> bool:
    """Whether the native depthwise kernel gradient runs (stride-1 float32 on CPU).

    (Not gated on the instruction set: it has no register tile. Never under tracing: it is
    a ctypes call, not a torch.library op.)
    """
    return not tracing() and dtype == torch.float32 and torch.device(device).type == "cpu"


def padded_rank(rank: int, tuning: Tuning | None = None) -> int:
    """The rank the fast path computes with: rounded up to ``rank_align`` if that is cheap."""
    tuning = tuning or active()
    aligned = -(-rank // tuning.rank_align) * tuning.rank_align
    return aligned if 8 * (aligned - rank) <= rank else rank


def frame_positions(x_shape) -> int:
    """Positions per frame of the fused walk: H * W of a 3-D input, W of a 2-D one (its rows)."""
    return math.prod(x_shape[-2:]) if len(x_shape) == 5 else x_shape[-1]


def workspace_bytes(x_shape, rank: int, kernel: tuple[int, ...], dilation) -> int:
    """Bytes of one thread's rings in the fused backward (two rings of ``span`` frames)."""
    span = (kernel[0] - 1) * dilation[0] + 1
    return 2 * span * frame_positions(x_shape) * rank * 4


def fused_refusal(
    inp: Inputs, rank: int, kernel, stride, m: Machine | None = None, tuning: Tuning | None = None
) -> str | None:
    """Why the fused native pass cannot run this CP conv (rank as computed); None if it can."""
    tuning = tuning or active()
    dims = len(inp.shape) - 2
    if dims not in (2, 3):
        return f"x has {dims} spatial axes, the fused pass runs 2-D and 3-D convs"
    if inp.dtype != torch.float32:
        return f"x is {inp.dtype}, the fused pass is float32"
    if inp.device != "cpu":
        return f"x is on {inp.device}, the fused pass runs on CPU"
    if inp.params_dtype is not None:
        return (
            f"a factor or the bias is {inp.params_dtype} on {inp.params_device}, "
            "x is float32 on cpu"
        )
    if any(s != 1 for s in stride):
        return f"stride is {tuple(stride)}, the fused pass needs stride 1"
    if rank % 16:
        return f"rank {rank} is not a multiple of 16 (padding it would cost > 1/8 more work)"
    if max(kernel) > MAX_TAPS:
        return f"kernel {tuple(kernel)} has more than {MAX_TAPS} taps on an axis"
    if inp.layout == "strided":
        return "x is not contiguous channels-first or channels-last"
    return native_refusal(m or (_traced_machine() if tracing() else machine()), tuning)


def fast_schedule(
    inp: Inputs,
    rank: int,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    chunk: int | None = None,
    keep: bool | None = None,
    m: Machine | None = None,
    tuning: Tuning | None = None,
) -> tuple[str, list[str]]:
    """The fast path's schedule ("fused", "stream" or "batch") and why.

    Args:
        inp: the input.
        rank: the rank computed with (after :func:`padded_rank`).
        kernel: per spatial axis; ``stride``, ``dilation`` likewise.
        chunk: the caller's batch chunk (None: free); ``keep`` likewise (both are options of
            the batch schedule: given, no fused pass; a given chunk is never streamed).
        m: the machine (default: this process's).
        tuning: the constants.
    """
    tuning = tuning or active()
    reasons = []
    refusal = fused_refusal(inp, rank, kernel, stride, m, tuning)
    if refusal is None and chunk is None and keep is None:
        ws = workspace_bytes(inp.shape, rank, kernel, dilation)
        positions = frame_positions(inp.shape)
        if ws > tuning.fused_bytes:
            reasons.append(f"fused: its workspace ({ws} B) exceeds {tuning.fused_bytes} B")
        elif positions < tuning.fused_min_positions:
            reasons.append(
                f"fused: {positions} positions per frame, fewer than {tuning.fused_min_positions}"
            )
        else:
            return "fused", ["fused: the native pass runs this layer and its workspace fits"]
    elif refusal is None:
        reasons.append("fused: chunk / keep were given (batch schedule options)")
    else:
        reasons.append(f"not fused: {refusal}")
    element = torch.empty((), dtype=inp.dtype).element_size()
    sample_bytes = rank * math.prod(inp.shape[2:]) * element  # one sample's A x
    if any(s != 1 for s in stride):  # aten's strided depthwise backward per slab: the
        # cp_resnet18_3d stem ran 2.2x slower streamed (114 vs 51 ms)
        return "batch", [*reasons, "batch: strided layers are not streamed"]
    if chunk is None and sample_bytes > tuning.chunk_bytes:
        return "stream", [*reasons, f"stream: one sample's A x is {sample_bytes} B > chunk"]
    return "batch", [*reasons, f"batch: one sample's A x ({sample_bytes} B) fits a chunk"]


# -- the route of a layer --


@dataclass(frozen=True)
class Route:
    """The plan for one layer and input.

    Attributes:
        path: ``"plain"``, ``"fast"`` or ``"dense"``.
        schedule: the fast path's ``"fused"``, ``"batch"``, ``"stream"`` or ``"stages"``
            (rank-space Psi); None on the plain and dense paths.
        native: whether the native C kernels run (fused pass or separable depthwise blocks).
        reasons: one sentence per decision, in order.
    """

    path: str
    schedule: str | None
    native: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class LayerSpec:
    """The geometry of a CP layer the choice depends on (see :func:`layer_spec`)."""

    rank: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    stages: bool  # rank-space Psi between the 1-D convolutions
    dense_ratio: float | None  # dense-route MACs over CP MACs; None: the layer cannot take it


def standard_ops_only() -> bool:
    """True under ONNX export or TorchScript tracing: graphs that cannot carry a custom op."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def compiling() -> bool:
    """True under torch.compile / torch.export (they keep torch.library ops in their graphs)."""
    compiling = getattr(torch.compiler, "is_compiling", lambda: False)()
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
    return compiling or exporting


def tracing() -> bool:
    """True under ONNX export, TorchScript tracing or torch.compile / torch.export."""
    return standard_ops_only() or compiling()


def choose_path(
    implementation: str, spec: LayerSpec, inp: Inputs, traced: bool, tuning: Tuning | None = None
) -> tuple[str, list[str]]:
    """The path (``"plain"``, ``"fast"``, ``"dense"``) and why; ``"auto"`` resolved."""
    tuning = tuning or active()
    if implementation == "dense" and spec.stages:  # only from the process-wide switch
        return "plain", ["plain: 'dense' was asked for, the layer has Psi (not linear)"]
    if implementation != "auto":
        return implementation, [f"implementation={implementation!r} was asked for"]
    if traced:
        return "plain", ["plain: an exporter or compiler is tracing (standard ops only)"]
    if inp.device != "cpu":
        return "plain", [f"plain: the fast path is measured on CPU only, x is on {inp.device}"]
    if inp.dtype not in FAST_DTYPES:
        return "plain", [f"plain: {inp.dtype} has no oneDNN kernel (fast: float32, bfloat16)"]
    if spec.stages:
        return "plain", ["plain: rank-space BatchNorm / activations (Psi) run slower channels-last"]
    ratio = spec.dense_ratio
    if ratio is not None and ratio <= tuning.dense_ratio and len(spec.kernel) <= 3:
        shown = round(100 * ratio) / 100  # no format spec: dynamo cannot apply one to a SymFloat
        return "dense", [f"dense: the dense route costs {shown}x the CP MACs"]
    activations = spec.rank * inp.shape[0] * math.prod(inp.shape[2:])
    if activations < tuning.min_activations:
        return "plain", [f"plain: {activations} rank-space activations, too few for fast"]
    return "fast", [f"fast: {activations} rank-space activations on CPU {inp.dtype}"]


def route(
    implementation: str,
    spec: LayerSpec,
    inp: Inputs,
    m: Machine,
    traced: bool = False,
    tuning: Tuning | None = None,
) -> Route:
    """The :class:`Route` of a layer of geometry ``spec`` on ``inp`` (uncached)."""
    tuning = tuning or active()
    path, reasons = choose_path(implementation, spec, inp, traced, tuning)
    if path != "fast":
        return Route(path, None, False, tuple(reasons))
    rank = padded_rank(spec.rank, tuning)
    if rank != spec.rank:
        reasons.append(f"rank {spec.rank} computed as {rank} (aligned rows)")
    separable = native_depthwise(inp.dtype, inp.device, rank, spec.kernel, m)
    if spec.stages:
        reasons.append("stages: 1-D convs with Psi between them")
        return Route(path, "stages", separable, tuple(reasons))
    schedule, why = fast_schedule(inp, rank, spec.kernel, spec.stride, spec.dilation, m=m,
                                  tuning=tuning)  # fmt: skip
    uses_native = schedule == "fused" or (separable and any(s == 1 for s in spec.stride))
    if not uses_native:
        why.append(f"eager kernels: {native_refusal(m, tuning) or 'no native kernel fits'}")
    return Route(path, schedule, uses_native, tuple(reasons + why))


_CACHE: dict[tuple, Route] = {}
_CACHE_SIZE = 4096


def plan(layer, x: torch.Tensor, m: Machine | None = None, tuning: Tuning | None = None) -> Route:
    """The route ``layer`` (a CPConv) takes on ``x``, cached per geometry and input kind.

    Args:
        layer: the layer (its ``implementation``, geometry and parameters are read).
        x: the input ``(N, C, *spatial)``.
        m: the machine (default: this process's instruction set and native mode).
        tuning: the constants.
    """
    if tracing():  # nothing cached; the fused pass only as its torch.library op
        if layer.implementation != "auto":
            return _traced_route(layer, x)
        return _TRACED if standard_ops_only() else _compiled_route(layer, x, tuning)
    tuning = tuning or active()
    m = m or machine()
    params = _parameters(layer)
    key = (layer.implementation, layer_key(layer), describe(x, params), m, tuning)
    found = _CACHE.get(key)
    if found is None:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        found = _CACHE[key] = route(key[0], layer_spec(layer, x.shape), key[2], m, False, tuning)
    return found


_TRACED = Route("plain", None, False, ("plain: an exporter or compiler is tracing",))


def _traced_route(layer, x: torch.Tensor) -> Route:
    """The route of an explicit implementation under tracing: the fused pass (a torch.library
    op, kept in the graph) where it runs, else eager kernels only."""
    spec = LayerSpec(layer.rank, layer.kernel_size, layer.stride, layer.dilation,
                     layer.psi is not None, None)  # fmt: skip
    return route(layer.implementation, spec, describe(x), _traced_machine(), True)


def _parameters(layer) -> tuple:
    """The tensors a layer's route depends on (their dtype, device and grad flags)."""
    return (layer.in_factor, layer.out_factor, layer.bias, *layer.kernel_factors)


def _compiled_route(layer, x: torch.Tensor, tuning: Tuning | None) -> Route:
    """``"auto"`` under torch.compile / torch.export: the fused op exactly where the eager plan
    takes the fused pass on this machine (same rules, same :class:`Tuning`), else plain (the
    batch / stream schedules and the separable depthwise blocks are ctypes calls, not ops)."""
    params = _parameters(layer)
    shape = tuple(int(s) for s in x.shape)  # dynamic shapes specialise: the route depends on them
    inp = replace(describe(x, params), shape=shape)
    eager = route("auto", layer_spec(layer, shape), inp, _traced_machine(), False,
                  tuning or active())  # fmt: skip
    if eager.path == "fast" and eager.schedule == "fused":
        return replace(eager, reasons=(*eager.reasons, "compiled: the hoconv::cp_fused op"))
    why = "plain: compiling, and the eager plan takes no fused pass here (only it is an op)"
    return Route("plain", None, False, (*eager.reasons, why))


@torch.compiler.assume_constant_result
def _traced_machine() -> Machine:
    """This process's machine, a constant to compilers (they do not trace its env reads)."""
    m = machine()
    return Machine(m.isa, m.native, native.available())


def layer_key(layer) -> tuple:
    """What of a CP layer its route depends on, besides the input (hashable)."""
    return (type(layer), layer.in_channels, layer.out_channels, layer.kernel_size,
            layer.stride, layer.padding, layer.dilation, layer.rank, layer.psi is None,
            layer.skip_factor is None)  # fmt: skip


def layer_spec(layer, shape: Sequence[int]) -> LayerSpec:
    """The :class:`LayerSpec` of a CPConv for inputs of ``shape``."""
    ratio = None if layer.psi is not None else layer.dense_ratio(shape)
    return LayerSpec(layer.rank, layer.kernel_size, layer.stride, layer.dilation,
                     layer.psi is not None, ratio)  # fmt: skip


__all__ = [
    "FAST_DTYPES",
    "SCHEDULES",
    "TUNING",
    "Inputs",
    "LayerSpec",
    "Machine",
    "Route",
    "Tuning",
    "active",
    "choose_path",
    "compiling",
    "describe",
    "fast_schedule",
    "fused_refusal",
    "machine",
    "native_depthwise",
    "native_refusal",
    "native_weight_grad",
    "padded_rank",
    "plan",
    "route",
    "standard_ops_only",
    "tracing",
    "tuned",
]
