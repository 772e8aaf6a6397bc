"""Dense vs factorized convolutions, side by side (same as ``hoconv bench``).

Usage: ``PYTHONPATH=. python benchmarks/conv.py --out bench-out [--quick] [--config 3d]``.
"""

from __future__ import annotations

import argparse
import sys

from hoconv.commands.bench import add_arguments, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
