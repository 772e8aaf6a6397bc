"""Tiny fixture trees in the published CIFAR-10 (python) and 20BN-Jester v1 formats."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence

import cv2
import numpy as np

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck"]  # fmt: skip


def write_cifar_batch(
    path: str, images: np.ndarray, labels: Sequence[int], protocol: int = 2
) -> None:
    """One batch file: ``images`` uint8 (N, 32, 32, 3) stored as (N, 3072) R, G, B planes."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # (N, 3072)
    batch = {
        b"batch_label": b"fixture batch",
        b"labels": [int(v) for v in labels],
        b"data": np.ascontiguousarray(data, dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    with open(path, "wb") as fh:
        pickle.dump(batch, fh, protocol=protocol)


def write_cifar(
    root: str,
    make: Callable[[np.random.Generator, int], tuple[np.ndarray, int]],
    per_batch: int,
    per_test: int,
    seed: int = 0,
) -> str:
    """A ``cifar-10-batches-py`` tree; ``make(rng, i)`` gives one (image, label)."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    counter = 0
    for name in names:
        n = per_test if name == "test_batch" else per_batch
        pairs = [make(rng, counter + j) for j in range(n)]
        counter += n
        write_cifar_batch(
            os.path.join(folder, name), np.stack([p[0] for p in pairs]), [p[1] for p in pairs]
        )
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR_NAMES],
            b"num_vis": 3072}  # fmt: skip
    with open(os.path.join(folder, "batches.meta"), "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    return folder


def coloured_shape(rng: np.random.Generator, i: int, classes: int = 4) -> tuple[np.ndarray, int]:
    """A learnable 32x32 image: class = colour of a randomly placed square (noisy background)."""
    label = i % classes
    colours = [(220, 40, 40), (40, 200, 40), (40, 60, 220), (220, 220, 40)]
    image = rng.integers(0, 60, size=(32, 32, 3), dtype=np.uint8)
    side = int(rng.integers(14, 22))
    top, left = rng.integers(0, 32 - side, size=2)
    image[top : top + side, left : left + side] = colours[label]
    return image, label


def write_jester(
    root: str,
    classes: Sequence[str],
    splits: dict[str, list[tuple[str, str | None]]],
    clips: dict[str, list[tuple[str, np.ndarray]]],
) -> None:
    """A Jester v1 tree: labels file, split lists (``id;label``, ids only for test), frames.

    Args:
        root: destination.
        classes: class names (the labels file).
        splits: ``{"train": [(id, label name)], "validation": [...], "test": [(id, None)]}``.
        clips: ``{id: [(file name, (H, W, 3) RGB frame), ...]}``.
    """
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "jester-v1-labels.csv"), "w") as fh:
        fh.write("\n".join(classes) + "\n")
    for split, rows in splits.items():
        with open(os.path.join(root, f"jester-v1-{split}.csv"), "w") as fh:
            for clip, label in rows:
                fh.write(f"{clip};{label}\n" if label is not None else f"{clip}\n")
    for clip, frames in clips.items():
        folder = os.path.join(root, "20bn-jester-v1", clip)
        os.makedirs(folder, exist_ok=True)
        for name, frame in frames:
            cv2.imwrite(os.path.join(folder, name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


def moving_square(
    rng: np.random.Generator, label: int, frames: int = 16, size: int = 16
) -> list[np.ndarray]:
    """A learnable clip: a white square moving right / left / down / up (class 0..3).

    The square moves half a pixel per frame through the middle of the frame, so every class
    has the same average image and only the motion tells them apart.
    """
    side = size // 3
    dy, dx = [(0, 1), (0, -1), (1, 0), (-1, 0)][label]
    centre = (size - side) // 2
    jitter = rng.integers(-1, 2, size=2)
    out = []
    for t in range(frames):
        image = rng.integers(0, 40, size=(size, size, 3), dtype=np.uint8)
        shift = (t - frames // 2) // 2
        y = int(np.clip(centre + jitter[0] + dy * shift, 0, size - side))
        x = int(np.clip(centre + jitter[1] + dx * shift, 0, size - side))
        image[y : y + side, x : x + side] = 255
        out.append(image)
    return out
