"""Run `hoconv` with the test stand-ins installed (for subprocess and torchrun tests)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import standins  # noqa: E402

from hoconv.app.cli import main  # noqa: E402

if __name__ == "__main__":
    standins.install()
    sys.exit(main(sys.argv[1:]))
