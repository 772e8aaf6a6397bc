"""Shared machinery of the affect data sets: frame records, image reading, static / video modes.

A data set is a list of :class:`VideoRecord` (a still-image data set is one record per
image or per subject). ``mode="static"`` yields one sample per labelled frame that has an
image; ``mode="video"`` yields clips (random clips for training, evaluation windows that
count every labelled frame exactly once through ``mask``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from hoconv.app.data.clips import eval_windows, random_clip
from hoconv.app.data.faces import crop_face
from hoconv.app.data.report import LoadReport, ReportedDataset
from hoconv.app.data.transforms import ClipAugment, frames_to_tensor

SPLITS = ("train", "val", "test")
MODES = ("static", "video")
VERIFY_CHOICES = ("exists", "header", "decode")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM")


@dataclass
class VideoRecord:
    """Frames of one video (or the stills of one subject).

    Attributes:
        name: video id (the ``video`` field of samples).
        subject: subject / identity id (for subject-independent splits).
        frames: int64 (F,) frame numbers, increasing.
        valence, arousal: float32 (F,) targets (0 where unlabelled).
        expression: int64 (F,) class, -1 = missing.
        labelled: bool (F,) True where the V/A targets are real.
        paths: image path per frame (None = no image), or None when ``pixels`` is given.
        pixels: uint8 (F, H, W, 3) RGB frames held in memory (synthetic data).
        boxes: float (F, 4) face boxes ``(x, y, w, h)`` (NaN = none), optional.
        landmarks: float (F, K, 2) landmarks (NaN = none), optional.
    """

    name: str
    subject: str
    frames: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    expression: np.ndarray
    labelled: np.ndarray
    paths: list[str | None] | None = None
    pixels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def require_root(root: str | os.PathLike | None, name: str) -> str:
    """The data set root as a string; clear errors when missing."""
    if root is None:
        raise ValueError(f"data set {name!r} needs root=<folder with the data set>")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{name} root folder not found: {root}")
    return os.fspath(root)


def image_problem(path: str, verify: str) -> str | None:
    """Why ``path`` is unusable under the ``verify`` level, or None if it looks fine."""
    if verify == "exists":
        return None if os.path.isfile(path) else "missing"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if not head:
        return "empty file"
    if not any(head.startswith(m) for m in _MAGIC):
        return "not a JPEG/PNG/BMP file"
    if verify == "decode" and cv2.imread(path, cv2.IMREAD_COLOR) is None:
        return "cv2.imread failed"
    return None


def _truncated_jpeg(path: str) -> bool:
    """True for a JPEG (SOI marker) whose end-of-image marker (FF D9) is missing."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\xff\xd8":
                return False
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - 64, 0))
            return b"\xff\xd9" not in f.read()
    except OSError:
        return False


def collate_skipping(samples: list) -> dict | None:
    """Default collation after dropping unreadable (None) samples; None if all were."""
    from torch.utils.data import default_collate

    kept = [s for s in samples if s is not None]
    return default_collate(kept) if kept else None


SKIPPED_KEY = "_skipped"


def collate_counting(samples: list) -> dict:
    """:func:`collate_skipping` that also says how many samples it dropped.

    Returns:
        The collated readable samples plus ``"_skipped"`` (int: unreadable samples of the
        batch); a batch with no readable sample is ``{"_skipped": len(samples)}`` alone (no
        ``"input"``). Works in DataLoader workers, where a counter would be lost.
    """
    batch = collate_skipping(samples) or {}
    batch[SKIPPED_KEY] = sum(s is None for s in samples)
    return batch


def read_rgb(path: str) -> np.ndarray | None:
    """``(H, W, 3)`` uint8 RGB via ``cv2.imread``, or None if it cannot be decoded.

    A truncated JPEG (no end-of-image marker) counts as unreadable: OpenCV would
    half-decode it silently.
    """
    if _truncated_jpeg(path):
        return None
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class AffectDataset(ReportedDataset):
    """Static or video samples over a list of :class:`VideoRecord`.

    Args:
        records: the videos.
        report: the loading report (its ``loaded`` / ``videos`` counts are set here).
        mode: ``"static"`` or ``"video"``.
        image_size: output side in pixels.
        margin: face-crop margin (see :func:`hoconv.app.data.faces.crop_face`).
        clip_length: frames per clip (video mode).
        clip_stride: frame step inside a clip (video mode).
        sampling: ``"random"`` (one random clip per video per ``clips_per_video``) or
            ``"windows"`` (evaluation windows); default random for train, windows otherwise.
        clips_per_video: random clips drawn per video per epoch.
        transform: callable on the ``(3, H, W)`` / ``(3, T, H, W)`` input.
        augment: after ``transform``, a :class:`~hoconv.app.data.transforms.ClipAugment` draw
            per item (one crop / flip / colour change for the whole clip), keyed like the
            random clips by (seed, epoch, index): the same with any number of workers.
        seed: seed of the random clip positions (None = fresh entropy).
        verbose: print the summary after loading.
    """

    def __init__(
        self,
        records: list[VideoRecord],
        report: LoadReport,
        mode: str = "static",
        image_size: int = 112,
        margin: float = 0.2,
        clip_length: int = 16,
        clip_stride: int = 1,
        sampling: str | None = None,
        clips_per_video: int = 1,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        augment: bool = False,
        seed: int | None = None,
        verbose: bool = True,
    ) -> None:
        check_choice("mode", mode, MODES)
        if sampling is None:
            sampling = "random" if report.split == "train" else "windows"
        check_choice("sampling", sampling, ("random", "windows"))
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
        self.records = records
        self.report = report
        self.mode, self.sampling = mode, sampling
        self.image_size, self.margin = int(image_size), float(margin)
        self.clip_length, self.clip_stride = int(clip_length), int(clip_stride)
        self.clips_per_video = int(clips_per_video)
        self.transform = transform
        self.augment = bool(augment)
        self.rng = np.random.default_rng(seed)
        self.index = self._build_index()
        report.videos = len(records)
        report.loaded = sum(int((r.labelled & self._has_image(r)).sum()) for r in records)
        if verbose:
            print(report.format(), file=sys.stderr)

    @staticmethod
    def _has_image(rec: VideoRecord) -> np.ndarray:
        if rec.paths is None:
            return np.ones(len(rec), dtype=bool)
        return np.array([p is not None for p in rec.paths], dtype=bool)

    def _build_index(self) -> list:
        if self.mode == "static":
            return [
                (v, int(p))
                for v, rec in enumerate(self.records)
                for p in np.flatnonzero(rec.labelled & self._has_image(rec))
            ]
        if self.sampling == "random":
            return [(v, None, None) for v, _ in enumerate(self.records)] * self.clips_per_video
        return [
            (v, pos, new)
            for v, rec in enumerate(self.records)
            for pos, new in eval_windows(len(rec), self.clip_length, self.clip_stride)
        ]

    def __len__(self) -> int:
        return len(self.index)

    # -- frames -------------------------------------------------------------------------
    def _frame(self, rec: VideoRecord, pos: int) -> np.ndarray | None:
        """Cropped, resized RGB frame, or None when it has no image or cannot be read."""
        if rec.pixels is not None:
            image = rec.pixels[pos]
        else:
            path = rec.paths[pos]
            if path is None:
                return None
            image = read_rgb(path)
            if image is None:
                self.report.add_corrupt(path, "cv2.imread returned None")
                rec.paths[pos] = None
                rec.labelled[pos] = False
                return None
        box = None if rec.boxes is None or np.isnan(rec.boxes[pos]).any() else rec.boxes[pos]
        lms = None
        if box is None and rec.landmarks is not None and not np.isnan(rec.landmarks[pos]).any():
            lms = rec.landmarks[pos]
        if box is None and lms is None and image.shape[:2] == (self.image_size,) * 2:
            return image
        return crop_face(image, box=box, landmarks=lms, margin=self.margin, size=self.image_size)

    @staticmethod
    def _to_input(frames: np.ndarray) -> torch.Tensor:
        return frames_to_tensor(frames)  # (3, T, H, W), normalised as in transforms

    def __getitem__(self, i: int) -> dict:
        if self.mode == "static":
            return self._static_item(i)
        return self._video_item(i)

    def _static_item(self, i: int) -> dict | None:
        """Sample ``i``, or None when its image cannot be read (counted in the report).

        An unreadable image is never replaced by another sample: :func:`collate_skipping`
        drops the None so every readable sample is counted once.
        """
        v, pos = self.index[i]
        rec = self.records[v]
        image = self._frame(rec, pos)
        if image is None:
            return None
        x = self._finish(self._to_input(image[None])[:, 0], i)  # (3, H, W)
        return {
            "input": x,
            "valence": torch.tensor(rec.valence[pos], dtype=torch.float32),
            "arousal": torch.tensor(rec.arousal[pos], dtype=torch.float32),
            "expression": torch.tensor(rec.expression[pos], dtype=torch.int64),
            "video": rec.name,
            "frame": torch.tensor(rec.frames[pos], dtype=torch.int64),
        }

    def _finish(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """``transform``, then the item's augmentation draw when ``augment`` is on."""
        if self.transform is not None:
            x = self.transform(x)
        if self.augment:
            seed = int(self._item_rng(i, stream=1).integers(2**62))
            x = ClipAugment(generator=torch.Generator().manual_seed(seed))(x)
        return x

    def _item_rng(self, i: int, stream: int = 0) -> np.random.Generator:
        """A generator for item ``i`` keyed by the seed of ``self.rng`` (set per epoch by the trainer).

        Never drawing from the shared ``self.rng`` makes each item's random clip depend on
        (seed, epoch, index) only: the same with any number of DataLoader workers (each holds
        a copy of ``self.rng``) and in any access order. ``stream`` keeps an item's draws
        apart (0: the clip's position, 1: its augmentation).
        """
        entropy = self.rng.bit_generator.seed_seq.entropy
        key = list(entropy) if isinstance(entropy, (list, tuple)) else [int(entropy or 0)]
        return np.random.default_rng([*key, i] + ([stream] if stream else []))

    def _video_item(self, i: int) -> dict | None:
        """Clip ``i``; None when none of its frames can be read (each one is counted)."""
        v, pos, new = self.index[i]
        rec = self.records[v]
        if pos is None:
            pos, new = random_clip(len(rec), self.clip_length, self.clip_stride, self._item_rng(i))
        size = self.image_size
        frames = np.zeros((len(pos), size, size, 3), dtype=np.uint8)  # missing -> black
        ok = np.zeros(len(pos), dtype=bool)
        for t, p in enumerate(pos):
            image = self._frame(rec, int(p))
            if image is not None:
                frames[t], ok[t] = image, True
        if not ok.any():
            return None
        x = self._finish(self._to_input(frames), i)  # (3, T, H, W)
        return {
            "input": x,
            "valence": torch.from_numpy(rec.valence[pos].astype(np.float32)),
            "arousal": torch.from_numpy(rec.arousal[pos].astype(np.float32)),
            "expression": torch.from_numpy(rec.expression[pos].astype(np.int64)),
            "mask": torch.from_numpy(new & ok & rec.labelled[pos]),
            "video": rec.name,
            "frames": torch.from_numpy(rec.frames[pos].astype(np.int64)),
        }


def split_subjects(
    subjects: list[str], split: str, fractions: tuple[float, float, float], seed: int
) -> set[str]:
    """The subjects of ``split`` in a seeded subject-independent partition.

    Subjects are sorted, shuffled with ``seed`` and cut by ``fractions`` (train, val, test);
    every split gets at least one subject when there are at least three.
    """
    check_choice("split", split, SPLITS)
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"split fractions must be 3 non-negative numbers, got {fractions}")
    unique = sorted(set(subjects))
    order = np.random.default_rng(seed).permutation(len(unique))
    total = float(sum(fractions))
    n = len(unique)
    n_val = max(1 if n >= 3 and fractions[1] > 0 else 0, round(n * fractions[1] / total))
    n_test = max(1 if n >= 3 and fractions[2] > 0 else 0, round(n * fractions[2] / total))
    n_train = n - n_val - n_test
    bounds = {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, n),
    }
    lo, hi = bounds[split]
    return {unique[j] for j in order[lo:hi]}
