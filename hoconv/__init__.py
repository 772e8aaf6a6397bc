"""hoconv: factorized higher-order convolutions on PyTorch."""

__version__ = "0.1.0"
