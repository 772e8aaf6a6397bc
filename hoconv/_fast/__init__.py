"""Fast execution paths of the factorized convolutions (see docs/performance.md)."""

from hoconv._fast.cp import cp_conv

__all__ = ["cp_conv"]
