import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py

# Tiny test shapes gain nothing from intra-op threads, and OpenMP spin-waiting makes them far
# slower on a loaded 2-core machine; pytest-xdist gives the parallelism instead.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
