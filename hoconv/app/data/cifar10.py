"""``cifar10``: CIFAR-10 images from the standard python release (static mode only).

Format (the ``cifar-10-python.tar.gz`` release, extracted)::

    <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta

(``root`` may also be the ``cifar-10-batches-py`` folder itself). Each batch is a pickled
dict with ``data``: uint8 (N, 3072) (row-major 32x32 red plane, then green, then blue) and
``labels``: N ints in [0, 10); ``batches.meta`` holds ``label_names``. The files are
Python-2 pickles (byte-string keys); they are read with a restricted unpickler that builds
only plain containers and numpy arrays, so a tampered file cannot run code. A missing file
raises FileNotFoundError and a malformed one ValueError, both naming the file.

Splits: ``test`` is ``test_batch`` (the set the paper reports on). ``train`` / ``val``
split the 50,000 training images: ``val_size`` images (default 5,000, stratified, an equal
share per class, chosen with ``val_seed``) are held out for model selection and ``train``
is the rest. ``val_size=0`` trains on all 50,000 (the paper's protocol; then use the test
split for the final number only, and ``split="val"`` raises).

Inputs: ``(3, 32, 32)`` normalised as every data set (``hoconv.app.data.transforms``). Training
augmentation (``augment``, default on for ``train`` only): random 32x32 crop of the image
zero-padded by 4 pixels, then a horizontal flip with probability 1/2, drawn per sample from
``(seed, epoch, index)`` so that runs are reproducible with any number of loader workers
(``set_epoch`` is called by the trainer). Samples: ``{"input": float (3, 32, 32),
"label": int64 ()}``.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

import numpy as np
import torch

from hoconv.app.data import register
from hoconv.app.data.base import require_root
from hoconv.app.data.loading import check_options, finish_report, require_mode, split_mask
from hoconv.app.data.report import EpochSeededDataset, LoadReport
from hoconv.app.data.transforms import to_tensor

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
NUM_CLASSES = 10
SIDE = 32
# The only globals a CIFAR pickle needs: numpy array reconstruction (numpy 1.x and 2.x names)
# and, for files re-pickled by Python 3 with protocol 2, the bytes constructor.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy array globals in ``_ALLOWED_GLOBALS``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        return super().find_class(module, name)


def safe_unpickle(path: str) -> dict[str, Any]:
    """Load a CIFAR pickle into a dict with ``str`` keys, without running foreign code.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a pickle of a dict, or needs a forbidden global.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"cifar10: file not found: {path}")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"cifar10: {path} is not a valid CIFAR-10 pickle ({err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"cifar10: {path} must hold a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _decode(name: Any) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)


def read_meta(folder: str) -> list[str]:
    """The 10 class names of ``batches.meta``."""
    path = os.path.join(folder, META_FILE)
    meta = safe_unpickle(path)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise ValueError(f"cifar10: {path} must hold 'label_names', a list of {NUM_CLASSES} names")
    return [_decode(n) for n in names]


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 32, 32, 3) RGB and labels int64 (N,) of one batch file."""
    batch = safe_unpickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"cifar10: {path}: 'data' must be a uint8 (N, 3072) numpy array")
    if data.shape[1] != 3 * SIDE * SIDE:
        raise ValueError(f"cifar10: {path}: 'data' rows have {data.shape[1]} values, expected 3072")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"cifar10: {path}: 'labels' must be a list of integers") from None
    if labels.shape[0] != data.shape[0]:
        raise ValueError(f"cifar10: {path}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"cifar10: {path}: labels must be in [0, {NUM_CLASSES - 1}]")
    images = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    return np.ascontiguousarray(images), labels


def _folder(root: str) -> str:
    nested = os.path.join(root, "cifar-10-batches-py")
    if os.path.isdir(nested):
        return nested
    if os.path.isfile(os.path.join(root, META_FILE)):
        return root
    raise FileNotFoundError(
        f"cifar10: no cifar-10-batches-py folder (or {META_FILE}) under {root}; "
        "expected the extracted python release"
    )


def stratified_holdout(labels: np.ndarray, val_size: int, seed: int) -> np.ndarray:
    """Boolean (N,) mask of ``val_size`` held-out images, an equal share of each class."""
    classes = np.unique(labels)
    if val_size % len(classes):
        raise ValueError(f"val_size must be a multiple of {len(classes)} classes, got {val_size}")
    per_class = val_size // len(classes)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for c in classes:
        members = np.flatnonzero(labels == c)
        if per_class > len(members):
            raise ValueError(f"val_size {val_size} asks {per_class} images of class {c}, "
                             f"which has only {len(members)}")  # fmt: skip
        held[rng.choice(members, per_class, replace=False)] = True
    return held


class Cifar10(EpochSeededDataset):
    """CIFAR-10 images in memory (see the module docstring).

    Args:
        images: uint8 (N, 32, 32, 3) RGB.
        labels: int64 (N,).
        classes: the class names.
        report: the loading report.
        augment: random crop (pad 4) + horizontal flip.
        seed: seed of the augmentation draws.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: list[str],
        report: LoadReport,
        augment: bool,
        seed: int = 0,
    ) -> None:
        self.images, self.labels = images, labels
        self.classes = classes
        self.num_classes = len(classes)
        self.report = report
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.labels)

    def _augment(self, image: np.ndarray, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))  # (40, 40, 3), black border
        top, left = rng.integers(0, 9, size=2)
        out = padded[top : top + SIDE, left : left + SIDE]  # (32, 32, 3)
        return out[:, ::-1] if rng.random() < 0.5 else out

    def __getitem__(self, i: int) -> dict:
        image = self.images[i]
        if self.augment:
            image = self._augment(image, i)
        return {"input": to_tensor(image), "label": torch.tensor(self.labels[i], dtype=torch.int64)}


@register("cifar10")
def cifar10(
    root: str | None = None,
    split: str = "train",
    mode: str = "static",
    val_size: int = 5000,
    val_seed: int = 0,
    augment: bool | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> Cifar10:
    """CIFAR-10 from the python release under ``root``.

    Args:
        root: folder holding ``cifar-10-batches-py`` (or that folder itself).
        split: ``"train"``, ``"val"`` (held out of the training batches) or ``"test"``.
        mode: must be ``"static"`` (images).
        val_size: training images held out as ``val`` (stratified; 0 = none).
        val_seed: seed of the held-out choice.
        augment: random crop + flip; default True for ``train``, False otherwise.
        seed: seed of the augmentation draws.
        verbose: print the loading summary.
    """
    check_options(split)
    require_mode("cifar10", mode, "static")
    if not isinstance(val_size, int) or val_size < 0:
        raise ValueError(f"val_size must be a non-negative integer, got {val_size!r}")
    if split == "val" and val_size == 0:
        raise ValueError("cifar10: val_size=0 holds out no validation images; use split='test'")
    folder = _folder(require_root(root, "cifar10"))
    classes = read_meta(folder)
    parts = [
        read_batch(os.path.join(folder, f))
        for f in (TEST_FILES if split == "test" else TRAIN_FILES)
    ]
    images = np.concatenate([p[0] for p in parts])  # (N, 32, 32, 3)
    labels = np.concatenate([p[1] for p in parts])  # (N,)
    report = LoadReport("cifar10", split)
    if split != "test" and val_size:
        held = stratified_holdout(labels, val_size, val_seed)
        keep = split_mask(held, split)
        report.filter(f"held out as {'train' if split == 'val' else 'val'} (val_size={val_size})",
                      int((~keep).sum()))  # fmt: skip
        images, labels = images[keep], labels[keep]
    finish_report(report, loaded=len(labels), videos=0, verbose=verbose)
    augment = split == "train" if augment is None else bool(augment)
    return Cifar10(images, labels, classes, report, augment=augment, seed=seed)
