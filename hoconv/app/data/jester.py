"""``jester``: 20BN-Jester v1 hand-gesture clips (video mode only).

Format (the published release)::

    <root>/jester-v1-labels.csv        one class name per line (27 in the release)
    <root>/jester-v1-train.csv         lines ``<id>;<label name>``
    <root>/jester-v1-validation.csv    lines ``<id>;<label name>``
    <root>/jester-v1-test.csv          lines ``<id>`` (no labels)
    <root>/20bn-jester-v1/<id>/00001.jpg, 00002.jpg, ...

Clips have a variable number of frames. Frame files are ordered by their number, not by
their name as a string (``2.jpg`` before ``10.jpg``, ``9.jpg`` before ``00010.jpg``); a gap
in the numbering (a missing frame) is counted in ``summary["filtered"]`` and the clip keeps
its other frames. Splits: ``train``, ``val`` (the validation list, on which the paper
reports) and ``test`` (ids only: ``label`` is -1).

Clip sampling (``clip_length`` frames, default 18 as the paper): ``sampling="segments"``
(default) cuts the whole clip into ``clip_length`` equal segments and takes one frame per
segment, a random one when training and the middle one otherwise, so a clip shorter than
``clip_length`` is covered end to end by repeating frames; ``sampling="window"`` takes
consecutive frames every ``clip_stride`` (a random window when training, the centred one
otherwise) and falls back to segments when the clip is shorter than the window.
Frames are resized so the short side is ``image_size`` (default 84) then cropped square
(centred; random when augmenting) with ``aspect="crop"``, or squashed with
``aspect="stretch"``. Training augmentation (``augment``, default on for ``train``):
:class:`hoconv.app.data.transforms.ClipAugment` without horizontal flips (a flip turns
"swiping left" into "swiping right").

Errors (naming the file): a missing label or list file, a malformed line, a duplicate class
name or an unknown label name -> ValueError / FileNotFoundError. A listed clip whose folder
is missing or holds no frame -> ValueError with ``on_error="raise"`` (default), or counted
in ``summary["corrupt"]`` and skipped with ``on_error="skip"``. A frame that cannot be
decoded at run time is recorded as corrupt and replaced by its nearest readable neighbour.

Samples: ``{"input": float (3, T, H, W), "label": int64 (), "video": <id>}``.
"""

from __future__ import annotations

import os
import re

import cv2
import numpy as np
import torch

from hoconv.app.data import register
from hoconv.app.data.base import check_choice, read_rgb, require_root
from hoconv.app.data.loading import check_options, finish_report, numbered, require_mode
from hoconv.app.data.report import EpochSeededDataset, LoadReport, check_on_error
from hoconv.app.data.transforms import ClipAugment, frames_to_tensor

LABELS_FILE = "jester-v1-labels.csv"
LIST_FILES = {
    "train": "jester-v1-train.csv",
    "val": "jester-v1-validation.csv",
    "test": "jester-v1-test.csv",
}
FRAMES_DIR = "20bn-jester-v1"
_FRAME = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)


def _lines(path: str) -> list[tuple[int, str]]:
    """Non-blank stripped lines with their 1-based numbers."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"jester: file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        return [(n, line.strip()) for n, line in enumerate(fh, 1) if line.strip()]


def read_labels(path: str) -> list[str]:
    """Class names of ``jester-v1-labels.csv``, in file order (index = class id)."""
    names = [line for _, line in _lines(path)]
    if not names:
        raise ValueError(f"jester: {path} lists no class name")
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"jester: {path}: class name {name!r} appears twice")
        seen.add(name)
    return names


def read_list(path: str, classes: list[str], labelled: bool) -> list[tuple[str, int]]:
    """``(id, class index)`` of a split list (index -1 for the unlabelled test list)."""
    index = {name: i for i, name in enumerate(classes)}
    out = []
    for n, line in _lines(path):
        fields = line.split(";")
        if not labelled:
            out.append((fields[0].strip(), -1))
            continue
        if len(fields) != 2 or not fields[0].strip():
            raise ValueError(f"jester: {path}:{n}: expected '<id>;<label name>', got {line!r}")
        clip, name = fields[0].strip(), fields[1].strip()
        if name not in index:
            raise ValueError(f"jester: {path}:{n}: unknown label name {name!r} "
                             f"(not in {LABELS_FILE})")  # fmt: skip
        out.append((clip, index[name]))
    return out


def list_frames(folder: str) -> tuple[list[str], int]:
    """Frame file names of a clip sorted by number, and the count of numbering gaps."""
    try:
        names = os.listdir(folder)
    except OSError:
        return [], 0
    frames = numbered(sorted(names), _FRAME)
    if not frames:
        return [], 0
    numbers = [k for k, _ in frames]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"jester: {folder}: two frame files have the same number")
    gaps = numbers[-1] - numbers[0] + 1 - len(numbers)
    return [name for _, name in frames], gaps


def segment_positions(
    num_frames: int, length: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """One position per equal segment of the clip (random in it with ``rng``, else middle)."""
    edges = np.linspace(0.0, num_frames, length + 1)
    offset = rng.random(length) if rng is not None else np.full(length, 0.5)
    pos = np.floor(edges[:-1] + offset * (edges[1:] - edges[:-1])).astype(np.int64)
    return np.clip(pos, 0, num_frames - 1)


def window_positions(
    num_frames: int, length: int, stride: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Consecutive positions every ``stride`` (random or centred start); segments if too short."""
    span = (length - 1) * stride + 1
    if num_frames < span:
        return segment_positions(num_frames, length, rng)
    slack = num_frames - span
    start = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
    return start + stride * np.arange(length, dtype=np.int64)


class Jester(EpochSeededDataset):
    """Jester clips (see the module docstring).

    Args:
        folder: the ``20bn-jester-v1`` folder.
        clips: ``(id, label, frame names joined by newlines)``.
        classes: class names.
        report: the loading report.
        clip_length, clip_stride, sampling, image_size, aspect, augment: see the module
            docstring.
        train: random sampling positions (training) instead of deterministic ones.
        seed: seed of the random draws (a function of ``(seed, epoch, index)``).
    """

    def __init__(
        self,
        folder: str,
        clips: list[tuple[str, int, str]],
        classes: list[str],
        report: LoadReport,
        *,
        clip_length: int,
        clip_stride: int,
        sampling: str,
        image_size: int,
        aspect: str,
        augment: bool,
        train: bool,
        seed: int,
    ) -> None:
        self.folder, self.clips = folder, clips
        self.classes, self.num_classes = classes, len(classes)
        self.report = report
        self.clip_length, self.clip_stride = clip_length, clip_stride
        self.sampling, self.image_size, self.aspect = sampling, image_size, aspect
        self.augment = bool(augment)
        self.train, self.seed, self.epoch = train, int(seed), 0

    def __len__(self) -> int:
        return len(self.clips)

    def _resize(self, image: np.ndarray) -> np.ndarray:
        """Square ``stretch`` or short side = ``image_size`` (``crop``, cropped by the caller)."""
        size = self.image_size
        h, w = image.shape[:2]
        if self.aspect == "stretch":
            return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)  # (nh, nw, 3)

    def _read(self, clip: str, names: list[str], positions: np.ndarray) -> list[np.ndarray | None]:
        cache: dict[int, np.ndarray | None] = {}
        for p in np.unique(positions):
            path = os.path.join(self.folder, clip, names[p])
            image = read_rgb(path)
            if image is None:
                self.report.add_corrupt(path, "cv2.imread returned None")
            cache[int(p)] = image
        readable = [p for p, im in cache.items() if im is not None]
        if not readable:
            raise ValueError(f"jester: no readable frame in {os.path.join(self.folder, clip)}")
        return [cache[min(readable, key=lambda q: abs(q - int(p)))] for p in positions]

    def __getitem__(self, i: int) -> dict:
        clip, label, joined = self.clips[i]
        names = joined.split("\n")
        rng = np.random.default_rng([self.seed, self.epoch, i]) if self.train else None
        if self.sampling == "segments":
            positions = segment_positions(len(names), self.clip_length, rng)
        else:
            positions = window_positions(len(names), self.clip_length, self.clip_stride, rng)
        frames = np.stack([self._resize(im) for im in self._read(clip, names, positions)])
        h, w, size = frames.shape[1], frames.shape[2], self.image_size  # frames (T, h, w, 3)
        top = int(rng.integers(0, h - size + 1)) if rng is not None else (h - size) // 2
        left = int(rng.integers(0, w - size + 1)) if rng is not None else (w - size) // 2
        frames = frames[:, top : top + size, left : left + size]  # (T, size, size, 3)
        x = frames_to_tensor(frames)  # (3, T, size, size)
        if self.augment:
            draw = int(np.random.default_rng([self.seed, self.epoch, i, 1]).integers(2**62))
            x = ClipAugment(flip_p=0.0, generator=torch.Generator().manual_seed(draw))(x)
        return {"input": x, "label": torch.tensor(label, dtype=torch.int64), "video": clip}


def _scan(
    folder: str, entries: list[tuple[str, int]], report: LoadReport
) -> list[tuple[str, int, str]]:
    clips, gaps = [], 0
    for clip, label in entries:
        path = os.path.join(folder, clip)
        names, missing = list_frames(path)
        if not names:
            reason = (
                "missing clip folder"
                if not os.path.isdir(path)
                else "no frame (.jpg) in clip folder"
            )
            if report.on_error == "raise":
                raise ValueError(f"jester: {path}: {reason}; pass on_error='skip' to skip it")
            report.add_corrupt(path, reason)
            continue
        gaps += missing
        clips.append((clip, label, "\n".join(names)))
    report.filter("missing frames (gaps in a clip's numbering)", gaps)
    return clips


@register("jester")
def jester(
    root: str | None = None,
    split: str = "train",
    mode: str = "video",
    clip_length: int = 18,
    clip_stride: int = 1,
    sampling: str = "segments",
    image_size: int = 84,
    aspect: str = "crop",
    augment: bool | None = None,
    seed: int = 0,
    on_error: str = "raise",
    verbose: bool = True,
) -> Jester:
    """20BN-Jester v1 under ``root`` (see the module docstring).

    Args:
        root: folder with the ``jester-v1-*.csv`` files and ``20bn-jester-v1``.
        split: ``"train"``, ``"val"`` (the validation list) or ``"test"`` (unlabelled).
        mode: must be ``"video"`` (clips).
        clip_length: frames per clip.
        clip_stride: frame step of ``sampling="window"``.
        sampling: ``"segments"`` or ``"window"``.
        image_size: output side in pixels.
        aspect: ``"crop"`` (short side then square crop) or ``"stretch"``.
        augment: clip augmentation; default True for ``train`` only.
        seed: seed of the random draws.
        on_error: ``"raise"`` or ``"skip"`` for clips without frames / unreadable frames.
        verbose: print the loading summary.
    """
    check_options(split)
    require_mode("jester", mode, "video")
    check_choice("sampling", sampling, ("segments", "window"))
    check_choice("aspect", aspect, ("crop", "stretch"))
    check_on_error(on_error)
    for key, value, low in (("clip_length", clip_length, 1), ("clip_stride", clip_stride, 1),
                            ("image_size", image_size, 8)):  # fmt: skip
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
    root = require_root(root, "jester")
    classes = read_labels(os.path.join(root, LABELS_FILE))
    entries = read_list(os.path.join(root, LIST_FILES[split]), classes, labelled=split != "test")
    folder = os.path.join(root, FRAMES_DIR)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"jester: frame folder not found: {folder}")
    report = LoadReport("jester", split, on_error)
    clips = _scan(folder, entries, report)
    finish_report(report, loaded=len(clips), videos=len(clips), verbose=verbose)
    train = split == "train"
    return Jester(
        folder, clips, classes, report, clip_length=clip_length, clip_stride=clip_stride,
        sampling=sampling, image_size=image_size, aspect=aspect,
        augment=train if augment is None else bool(augment), train=train, seed=seed,
    )  # fmt: skip
