"""Independent oracles for the tests: a direct N-d convolution built from ``Tensor.unfold``."""

from __future__ import annotations

import string

import torch
import torch.nn.functional as F


def direct_conv(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Cross-correlation of ``x (N, C, *S)`` with ``weight (T, C, *K)`` by explicit patches.

    ``padding`` is an int, a tuple of ints or a tuple of (before, after) pairs.
    """
    dim = weight.dim() - 2
    expand = lambda v: (v,) * dim if isinstance(v, int) else tuple(v)  # noqa: E731
    stride, dilation = expand(stride), expand(dilation)
    pads = [p if isinstance(p, tuple) else (p, p) for p in expand(padding)]
    x = F.pad(x, [p for pair in reversed(pads) for p in pair])
    for axis in range(dim):
        k, d, s = weight.shape[2 + axis], dilation[axis], stride[axis]
        span = d * (k - 1) + 1
        x = x.unfold(2 + axis, span, s)[..., ::d]  # window axis appended at the end
    letters = "".join(c for c in string.ascii_lowercase if c not in "nct")[:dim]
    windows = "".join(c.upper() for c in letters)
    out = torch.einsum(f"nc{letters}{windows},tc{windows}->nt{letters}", x, weight)
    if bias is not None:
        out = out + bias.view(1, -1, *([1] * dim))
    return out
