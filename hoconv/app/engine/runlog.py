"""Run logs (CSV + JSON, rewritten whole and atomically each epoch) and the progress bar."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path

from tqdm.auto import tqdm


def flatten_metrics(m: dict, prefix: str = "val") -> dict[str, float]:
    """``{"valence": {"ccc": x}}`` -> ``{"val_valence_ccc": x}``."""
    flat: dict[str, float] = {}
    for key, value in m.items():
        name = f"{prefix}_{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, name))
        else:
            flat[name] = value
    return flat


def _atomic_write(path: Path, text: str) -> None:
    """Write through ``.NAME.tmp`` + rename; a failed write leaves no temp file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_history(run_dir: Path, history: list[dict]) -> None:
    """Write ``log.csv`` and ``log.json`` from the whole history (one row per epoch)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    _atomic_write(run_dir / "log.csv", buf.getvalue())
    clean = [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in history
    ]
    _atomic_write(run_dir / "log.json", json.dumps(clean, indent=1))


def progress(total: int, desc: str, enabled: bool) -> tqdm:
    """A tqdm bar on stderr (disabled on non-main ranks or with ``progress: false``)."""
    return tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def say(message: str, enabled: bool = True) -> None:
    """Print one status line (main process only), without breaking a live tqdm bar."""
    if enabled:
        tqdm.write(message, file=sys.stderr)
