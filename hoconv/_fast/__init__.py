"""Fast execution paths of the factorized convolutions (see docs/performance.md).

- :func:`cp_conv`: drop-in for :func:`hoconv.functional.cp_conv` (same arguments and result).
- :func:`cp_conv_stages`: the same with rank-space stages (Psi) after each 1-D convolution.
- :func:`select`: which path ``implementation="auto"`` takes for a given input.
"""

from hoconv._fast.cp import cp_conv
from hoconv._fast.select import IMPLEMENTATIONS, check_implementation, select
from hoconv._fast.stages import cp_conv_stages

__all__ = ["IMPLEMENTATIONS", "check_implementation", "cp_conv", "cp_conv_stages", "select"]
