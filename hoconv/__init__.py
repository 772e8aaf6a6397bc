"""hoconv: factorized higher-order convolutions on PyTorch."""

from hoconv._fast.switch import get_implementation, implementation, set_implementation
from hoconv.compress import compress_model
from hoconv.factorization import factorize
from hoconv.layers import BatchNorm, CPConv, TuckerConv
from hoconv.transduction import transduce

__version__ = "0.1.0"

__all__ = [
    "BatchNorm",
    "CPConv",
    "TuckerConv",
    "__version__",
    "compress_model",
    "factorize",
    "get_implementation",
    "implementation",
    "set_implementation",
    "transduce",
]
