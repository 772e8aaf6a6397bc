"""Fast execution paths of the factorized convolutions (see docs/performance.md).

- :func:`cp_conv`: drop-in for :func:`hoconv.functional.cp_conv` (same arguments and result).
- :func:`cp_conv_stages`: the same with rank-space stages (Psi) after each 1-D convolution.
- :func:`hoconv._fast.plan.plan`: the :class:`Route` a layer takes on an input (path,
  schedule, native kernels and why); every dispatch rule is in :mod:`hoconv._fast.plan`
  (``CPConv.route(x)`` asks it), every tuning constant in :mod:`hoconv._fast.tuning`.
- :func:`set_implementation` / :func:`implementation`: the implementation of layers that
  have none of their own (:mod:`hoconv._fast.switch`).

Submodules: ``cp`` (batch schedule and the public entry point), ``fused`` (the whole layer in
one native pass each way, the default where it applies), ``stream`` (slab schedule for large
rank-space activations), ``rows`` (matrix views of either memory layout and their products),
``depthwise`` (oneDNN depthwise blocks and their backward), ``stages`` (Psi), ``native`` (the
C kernels: fused layer, separable depthwise conv, depthwise kernel gradient), ``plan`` (the
dispatch; ``inputs`` what it reads, ``tuning`` its constants), ``switch`` (the implementation
switch) and ``workspace`` (the pool of large buffers).
"""

from hoconv._fast.cp import cp_conv
from hoconv._fast.plan import Route
from hoconv._fast.stages import cp_conv_stages
from hoconv._fast.switch import (
    IMPLEMENTATIONS,
    check_implementation,
    get_implementation,
    implementation,
    set_implementation,
)

__all__ = [
    "IMPLEMENTATIONS",
    "Route",
    "check_implementation",
    "cp_conv",
    "cp_conv_stages",
    "get_implementation",
    "implementation",
    "set_implementation",
]
