"""The embedded synthetic data set."""

import copy

import numpy as np
import pytest
import torch

from hoconv.app.data import create_dataset
from hoconv.app.data.synthetic import circumplex_expression

SMALL = dict(
    num_subjects=6, images_per_subject=4, videos_per_subject=1, frames_per_video=12, image_size=32
)


def test_static_sample_contract_and_determinism():
    ds = create_dataset("synthetic", split="train", **SMALL)
    s = ds[0]
    assert s["input"].shape == (3, 32, 32) and s["input"].dtype == torch.float32
    assert -1 <= float(s["input"].min()) and float(s["input"].max()) <= 1
    assert s["valence"].dtype == torch.float32 and s["valence"].shape == ()
    assert s["expression"].dtype == torch.int64 and s["frame"].dtype == torch.int64
    assert isinstance(s["video"], str)
    again = create_dataset("synthetic", split="train", **SMALL)[0]
    assert torch.equal(s["input"], again["input"]) and s["valence"] == again["valence"]
    other = create_dataset("synthetic", split="train", **{**SMALL, "seed": 1})[0]
    assert not torch.equal(s["input"], other["input"])
    assert ds.summary["loaded"] == len(ds)


def test_subject_independent_splits():
    subjects = {}
    for split in ("train", "val", "test"):
        ds = create_dataset(
            "synthetic", split=split, mode="static", **{**SMALL, "num_subjects": 10}
        )
        subjects[split] = {r.subject for r in ds.records}
        assert subjects[split]
    assert not subjects["train"] & subjects["val"]
    assert not subjects["train"] & subjects["test"]
    assert not subjects["val"] & subjects["test"]
    assert len(subjects["train"] | subjects["val"] | subjects["test"]) == 10


def test_video_mode_windows_and_labels():
    ds = create_dataset("synthetic", split="val", mode="video", clip_length=5, **SMALL)
    counted = {}
    for i in range(len(ds)):
        s = ds[i]
        assert s["input"].shape == (3, 5, 32, 32) and s["mask"].dtype == torch.bool
        for f in s["frames"][s["mask"]].tolist():
            counted[(s["video"], f)] = counted.get((s["video"], f), 0) + 1
    assert set(counted.values()) == {1} and len(counted) == sum(len(r) for r in ds.records)
    rec = ds.records[0]
    assert np.all(np.hypot(rec.valence, rec.arousal) <= 1.0)
    assert np.abs(np.diff(rec.valence)).max() < 0.5  # smooth trajectory


def test_arousal_shows_in_motion():
    # Head motion energy (mean absolute frame difference) grows with arousal.
    ds = create_dataset(
        "synthetic",
        split="train",
        mode="video",
        **{**SMALL, "num_subjects": 8, "videos_per_subject": 3, "frames_per_video": 24},
    )
    energy, arousal = [], []
    for rec in ds.records:
        x = rec.pixels.astype(np.float32)
        energy.append(np.abs(np.diff(x, axis=0)).mean())
        arousal.append(rec.arousal.mean())
    assert np.corrcoef(energy, arousal)[0, 1] > 0.3


def test_circumplex_classes():
    v = np.array([0.0, 0.9, -0.7, 0.1, -0.3, -0.6, -0.5, -0.8, 0.5])
    a = np.array([0.05, 0.2, -0.6, 0.9, 0.8, 0.3, 0.6, 0.0, -0.8])
    assert circumplex_expression(v, a).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 1]


def test_cache_roundtrip(tmp_path):
    a = create_dataset("synthetic", split="test", cache_dir=str(tmp_path), **SMALL)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    b = create_dataset("synthetic", split="test", cache_dir=str(tmp_path), **SMALL)
    assert torch.equal(a[1]["input"], b[1]["input"]) and a[1]["arousal"] == b[1]["arousal"]


def test_bad_options():
    with pytest.raises(ValueError, match="split"):
        create_dataset("synthetic", split="dev")
    with pytest.raises(ValueError, match="mode"):
        create_dataset("synthetic", mode="clip")
    with pytest.raises(ValueError, match="num_subjects"):
        create_dataset("synthetic", num_subjects=2)


def test_random_clips_depend_on_seed_epoch_and_index_only():
    """DataLoader workers each hold a copy of the data set: clips must not depend on access order."""
    kw = {"split": "train", "mode": "video", "num_subjects": 4, "videos_per_subject": 1,
          "frames_per_video": 24, "clip_length": 4, "image_size": 16}  # fmt: skip
    data = create_dataset("synthetic", **kw)
    data.rng = np.random.default_rng([3, 1])  # what the trainer sets at an epoch start
    worker = copy.deepcopy(data)  # a DataLoader worker's copy
    forward = [data[i]["frames"] for i in range(len(data))]
    backward = [worker[i]["frames"] for i in reversed(range(len(worker)))][::-1]
    for a, b in zip(forward, backward):
        assert torch.equal(a, b)
    assert len({tuple(f.tolist()) for f in forward}) > 1  # still random across items
    data.rng = np.random.default_rng([3, 2])  # next epoch: new clips
    assert any(not torch.equal(data[i]["frames"], f) for i, f in enumerate(forward))


@pytest.mark.parametrize("mode", ["static", "video"])
def test_augmentation_is_one_draw_per_item_keyed_by_seed_epoch_and_index(mode):
    kw = {**SMALL, "split": "train", "mode": mode, "clip_length": 4}
    plain, augmented = (
        create_dataset("synthetic", **kw),
        create_dataset("synthetic", augment=True, **kw),
    )
    for data in (plain, augmented):
        data.rng = np.random.default_rng([3, 1])  # what the trainer sets at an epoch start
    worker = copy.deepcopy(augmented)  # a DataLoader worker's copy, read in another order
    inputs = [augmented[i]["input"] for i in range(len(augmented))]
    backward = [worker[i]["input"] for i in reversed(range(len(worker)))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(inputs, backward))
    changed = [not torch.equal(a, plain[i]["input"]) for i, a in enumerate(inputs)]
    assert all(changed)
    assert all(-1 <= float(x.min()) and float(x.max()) <= 1 for x in inputs)
    if mode == "video":  # the clip positions (stream 0) are not moved by the augmentation
        assert all(torch.equal(augmented[i]["frames"], plain[i]["frames"]) for i in range(4))
    augmented.rng = np.random.default_rng([3, 2])  # next epoch: new draws
    assert any(not torch.equal(augmented[i]["input"], x) for i, x in enumerate(inputs))
