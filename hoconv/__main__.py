"""Allow `python -m hoconv ...` (and `torchrun -m hoconv ...`)."""

import sys

from hoconv.cli import main

sys.exit(main())
