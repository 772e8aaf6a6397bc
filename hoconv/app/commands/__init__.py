"""The `hoconv` subcommands (one module each) and the checks they share."""

from __future__ import annotations

import os
from pathlib import Path


def refuse_overwriting_source(checkpoint: str | os.PathLike, out: str | os.PathLike) -> None:
    """Raise ValueError when ``--out`` names the ``--checkpoint`` file it is made from."""
    src, dst = Path(checkpoint), Path(out)
    same = src.resolve() == dst.resolve() or (dst.exists() and src.exists() and dst.samefile(src))
    if same:
        raise ValueError(
            f"--out {out} is the --checkpoint it is made from; writing it would overwrite the "
            "source: pass another --out"
        )
