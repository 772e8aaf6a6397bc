"""ctypes mirrors of the entry-point structs of ``csrc/hoconv_native.h``.

Each native call fills one of these structs and passes its address; :func:`check_abi`
compares their sizes and the ABI version with what the loaded library reports
(``hc_struct_size``, ``hc_abi_version``), so a struct edited on one side only fails at load
with a message, not with corrupt memory.
"""

from __future__ import annotations

import ctypes

import torch

ABI_VERSION = 2  # HC_ABI_VERSION in hoconv_native.h
_P = ctypes.c_void_p
_L = ctypes.c_long


def _fields(pointers: str, longs: str) -> list[tuple[str, type]]:
    return [(n, _P) for n in pointers.split()] + [(n, _L) for n in longs.split()]


_GEOMETRY = "N D H W Do Ho Wo R KD KH KW pd ph pw dd dh dw"


class DwSep(ctypes.Structure):
    """``DwSep``: the separable depthwise conv (channels-last tensors)."""

    _fields_ = _fields("x fd fh fw out scratch", f"scratch_len threads {_GEOMETRY}")


class DwWgrad(ctypes.Structure):
    """``DwWgrad``: the depthwise kernel gradient, accumulated into ``acc``."""

    _fields_ = _fields("gy h acc", f"threads {_GEOMETRY}")


class Fwd(ctypes.Structure):
    """``Fwd``: a stride-1 3-D CP conv's operands, geometry and layouts."""

    _fields_ = _fields(
        "x vt fd fh fw ut bias out",
        "N C D H W Do Ho Wo R T Tp KD KH KW pd ph pw dd dh dw xn xc xp on oc op",
    )


class FwdCall(ctypes.Structure):
    """``FwdCall``: :class:`Fwd` plus the per-thread workspace."""

    _fields_ = [("p", Fwd), *_fields("ws", "ws_len threads")]


class Bwd(ctypes.Structure):
    """``Bwd``: :class:`Fwd` plus the output gradient, U, the padded V and dx."""

    _fields_ = [("f", Fwd), *_fields("gy um vp dx", "Cp")]


class BwdCall(ctypes.Structure):
    """``BwdCall``: :class:`Bwd` plus workspaces, gradient accumulators and work split."""

    _fields_ = [("b", Bwd), *_fields("ws grads side", "ws_len grads_len threads chunks")]


STRUCTS = (DwSep, DwWgrad, Fwd, FwdCall, Bwd, BwdCall)  # hc_struct_size's order
# entry points: name, argument struct (passed by pointer), result
ENTRY_POINTS = (
    ("hc_dw_sep", DwSep, ctypes.c_char_p),
    ("hc_dw_wgrad", DwWgrad, ctypes.c_char_p),
    ("hc_cp_fwd", FwdCall, ctypes.c_char_p),
    ("hc_cp_bwd", BwdCall, ctypes.c_char_p),
    ("hc_cp_fwd_ws_floats", Fwd, ctypes.c_long),
    ("hc_cp_bwd_ws_floats", Bwd, ctypes.c_long),
)


def check_tensor(
    name: str, t: torch.Tensor, shape: tuple[int, ...] | None = None, contiguous: bool = True
) -> None:
    """Raise a ValueError naming ``t`` unless it is a (contiguous) float32 CPU tensor of ``shape``.

    Raises:
        ValueError: wrong dtype, device, contiguity or shape.
    """
    if t.dtype != torch.float32 or t.device.type != "cpu":
        raise ValueError(
            f"native kernels: {name} must be float32 on cpu, got {t.dtype} on {t.device}"
        )
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(
            f"native kernels: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}"
        )
    if contiguous and not t.is_contiguous():
        raise ValueError(f"native kernels: {name} must be contiguous (strides {t.stride()})")


def check_layout(name: str, t: torch.Tensor) -> None:
    """Like :func:`check_tensor` for an (N, C, *S) tensor contiguous channels-first or channels-last."""
    if not (t.is_contiguous() or t.movedim(1, -1).is_contiguous()):
        raise ValueError(f"native kernels: {name} must be contiguous channels-first or -last")
    check_tensor(name, t if t.is_contiguous() else t.movedim(1, -1))


def threads_for(rank: int) -> int:
    """OpenMP threads for a depthwise call: torch's intra-op count, at most one per 16 channels."""
    return max(1, min(torch.get_num_threads(), rank // 16))


def geometry(kernel, before, dilation) -> dict[str, int]:
    """The struct fields of a 3-D conv's kernel, leading pads and dilation."""
    names = ("KD", "KH", "KW", "pd", "ph", "pw", "dd", "dh", "dw")
    return dict(zip(names, (*kernel, *before, *dilation)))


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Set the entry points' argument and result types; check the ABI (see module doc).

    Raises:
        OSError: the library's ABI version or a struct size differs from these mirrors.
    """
    lib.hc_abi_version.restype = _L
    lib.hc_struct_size.restype = _L
    lib.hc_struct_size.argtypes = [_L]
    if lib.hc_abi_version() != ABI_VERSION:
        raise OSError(f"native ABI version {lib.hc_abi_version()}, expected {ABI_VERSION}")
    for which, struct in enumerate(STRUCTS):
        size = lib.hc_struct_size(which)
        if size != ctypes.sizeof(struct):
            raise OSError(
                f"struct {struct.__name__} is {size} bytes in C, {ctypes.sizeof(struct)} in "
                "native_abi.py (keep hoconv_native.h and native_abi.py in step)"
            )
    for name, struct, result in ENTRY_POINTS:
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.POINTER(struct)]
        fn.restype = result
    return lib


def call(lib: ctypes.CDLL, name: str, args: ctypes.Structure) -> None:
    """Run entry point ``name`` on ``args``; raise ValueError with the C side's complaint.

    Raises:
        ValueError: the C side rejected a field (its message names the field).
    """
    err = getattr(lib, name)(ctypes.byref(args))
    if err is not None:
        raise ValueError(f"hoconv native {name}: {err.decode()}")


__all__ = [
    "ABI_VERSION",
    "STRUCTS",
    "bind",
    "call",
    "check_layout",
    "check_tensor",
    "geometry",
    "threads_for",
]
