"""Dense vs factorized convolutions, side by side (same as ``hoconv bench``).

Usage: ``PYTHONPATH=. python benchmarks/conv.py --out bench-out [--quick] [--config 3d]
[--layout cf|cl|both] [--no-tune-allocator]``. Runs through the ``hoconv`` CLI, so the
allocator setting of :func:`hoconv.app.runtime.tune_allocator` applies unless turned off.
"""

from __future__ import annotations

import sys

from hoconv.app.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    top = [a for a in args if a == "--no-tune-allocator"]  # a top-level option of the CLI
    sys.exit(main([*top, "bench", *[a for a in args if a not in top]]))
