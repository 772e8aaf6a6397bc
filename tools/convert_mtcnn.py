"""Convert the MTCNN weights in facenet-pytorch's wheel to hoconv's ``mtcnn.npz``.

Usage: ``pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/fp`` then
``python tools/convert_mtcnn.py /tmp/fp/facenet_pytorch-2.6.0-py3-none-any.whl``.
Reads ``facenet_pytorch/data/{pnet,rnet,onet}.pt`` straight from the wheel (zip), loads them
with ``weights_only=True`` and writes plain float32 arrays keyed ``pnet.conv1.weight`` etc.
The weights are MIT-licensed (facenet-pytorch's LICENSE.md); provenance printed for the note.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "hoconv" / "app" / "predict" / "weights" / "mtcnn.npz"


def main(wheel: str) -> None:
    arrays = {}
    print(f"wheel {Path(wheel).name} sha256 {hashlib.sha256(Path(wheel).read_bytes()).hexdigest()}")
    with zipfile.ZipFile(wheel) as zf:
        for net in ("pnet", "rnet", "onet"):
            raw = zf.read(f"facenet_pytorch/data/{net}.pt")
            print(f"  {net}.pt sha256 {hashlib.sha256(raw).hexdigest()}")
            state = torch.load(io.BytesIO(raw), weights_only=True)
            for key, value in state.items():
                arrays[f"{net}.{key}"] = value.numpy().astype(np.float32)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} sha256 {hashlib.sha256(OUT.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main(sys.argv[1])
