"""Fast execution paths of the factorized convolutions (see docs/performance.md).

- :func:`cp_conv`: drop-in for :func:`hoconv.functional.cp_conv` (same arguments and result).
- :func:`cp_conv_stages`: the same with rank-space stages (Psi) after each 1-D convolution.
- :func:`select`: which route ``implementation="auto"`` takes for a given input ("plain",
  "fast" or "dense": the reconstructed kernel through the dense convolution).

Submodules: ``cp`` (batch schedule and the public entry point), ``fused`` (the whole layer in
one native pass each way, the default where it applies), ``stream`` (slab schedule for large
rank-space activations), ``rows`` (matrix views of either memory layout and their products),
``depthwise`` (oneDNN depthwise blocks and their backward), ``stages`` (Psi), ``native`` (the
C kernels: fused layer, separable depthwise conv, depthwise kernel gradient), ``select`` and
``bench``.
"""

from hoconv._fast.cp import cp_conv
from hoconv._fast.select import IMPLEMENTATIONS, check_implementation, select
from hoconv._fast.stages import cp_conv_stages

__all__ = ["IMPLEMENTATIONS", "check_implementation", "cp_conv", "cp_conv_stages", "select"]
