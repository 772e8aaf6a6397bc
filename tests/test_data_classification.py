"""cifar10 and jester loaders on tiny fixture trees in the published formats."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from classification_fixtures import CIFAR_NAMES, write_cifar, write_cifar_batch, write_jester

from hoconv.app.data import create_dataset
from hoconv.app.data.jester import segment_positions, window_positions
from hoconv.app.data.transforms import denormalise

# -- CIFAR-10 ---------------------------------------------------------------------------------


def _indexed_image(rng: np.random.Generator, i: int) -> tuple[np.ndarray, int]:
    """Image whose planes encode the sample number: R = i, G = 2 i, B = 255 - i; label i % 10."""
    image = np.empty((32, 32, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = i, (2 * i) % 256, 255 - i
    image[0, 0] = (7, 8, 9)  # one distinct pixel: checks the plane layout and orientation
    return image, i % 10


@pytest.fixture
def cifar_root(tmp_path):
    write_cifar(str(tmp_path), _indexed_image, per_batch=8, per_test=6)
    return str(tmp_path)


def _pixels(x: torch.Tensor) -> np.ndarray:
    """Normalised (3, H, W) back to uint8 (H, W, 3)."""
    return (denormalise(x) * 255).round().byte().permute(1, 2, 0).numpy()


def test_cifar_splits_labels_and_pixel_layout(cifar_root):
    train = create_dataset("cifar10", cifar_root, "train", val_size=10, verbose=False)
    val = create_dataset("cifar10", cifar_root, "val", val_size=10, verbose=False)
    test = create_dataset("cifar10", cifar_root, "test", verbose=False)
    assert (len(train), len(val), len(test)) == (30, 10, 6)
    assert train.classes == CIFAR_NAMES and train.num_classes == 10
    assert train.summary["filtered"] == {"held out as val (val_size=10)": 10}
    assert sorted(val.labels.tolist()) == list(range(10))  # stratified: one per class
    seen = set()
    for ds in (train, val):
        for j in range(len(ds)):
            sample = _plain(ds, j)
            image = _pixels(sample["input"])
            i = int(image[5, 5, 0])
            assert image[5, 5].tolist() == [i, (2 * i) % 256, 255 - i]
            assert image[0, 0].tolist() == [7, 8, 9]
            assert int(sample["label"]) == i % 10 and sample["label"].dtype == torch.int64
            seen.add(i)
    assert seen == set(range(40))  # every training image in exactly one of train / val
    assert sorted(_pixels(_plain(test, j)["input"])[5, 5, 0] for j in range(6)) == list(
        range(40, 46)
    )


def _plain(ds, j):
    augment, ds.augment = ds.augment, False
    try:
        return ds[j]
    finally:
        ds.augment = augment


def test_cifar_augmentation_is_a_padded_crop_with_flip_and_reproducible(cifar_root):
    ds = create_dataset("cifar10", cifar_root, "train", val_size=0, verbose=False, seed=3)
    assert ds.augment and len(ds) == 40
    raw = ds.images[0]
    padded = np.pad(raw, ((4, 4), (4, 4), (0, 0)))
    crops = [padded[t : t + 32, s : s + 32] for t in range(9) for s in range(9)]
    crops += [c[:, ::-1] for c in crops]
    outs = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        out = _pixels(ds[0]["input"])
        assert any(np.array_equal(out, c) for c in crops)
        assert np.array_equal(out, _pixels(ds[0]["input"]))  # same (seed, epoch, index)
        outs.append(out)
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_cifar_accepts_protocol_5_and_root_being_the_batches_folder(tmp_path, cifar_root):
    folder = os.path.join(cifar_root, "cifar-10-batches-py")
    images = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    write_cifar_batch(os.path.join(folder, "test_batch"), images, [1, 2, 3], protocol=5)
    ds = create_dataset("cifar10", folder, "test", verbose=False)
    assert ds.labels.tolist() == [1, 2, 3]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_restricted_unpickler_refuses_code(cifar_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = os.path.join(cifar_root, "cifar-10-batches-py", "test_batch")
    with open(path, "wb") as fh:
        pickle.dump({b"data": _Evil(), b"labels": []}, fh, protocol=2)
    with pytest.raises(ValueError, match=r"test_batch.*forbidden global (posix|os|nt)\.system"):
        create_dataset("cifar10", cifar_root, "test", verbose=False)
    assert not os.path.exists(tmp_path / "pwned")


@pytest.mark.parametrize(
    "content, message",
    [
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "3072"),
        (
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]},
            r"labels must be in \[0, 9\]",
        ),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
        ([1, 2, 3], "must hold a dict"),
        (b"not a pickle", "not a valid CIFAR-10 pickle"),
    ],
)
def test_cifar_malformed_batch_names_the_file(cifar_root, content, message):
    path = os.path.join(cifar_root, "cifar-10-batches-py", "data_batch_3")
    with open(path, "wb") as fh:
        if isinstance(content, bytes):
            fh.write(content)
        else:
            pickle.dump(content, fh, protocol=2)
    with pytest.raises(ValueError, match=f"data_batch_3.*{message}"):
        create_dataset("cifar10", cifar_root, "train", verbose=False)


def test_cifar_missing_files_and_bad_options(cifar_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="root folder not found"):
        create_dataset("cifar10", str(tmp_path / "nope"), "test")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no cifar-10-batches-py"):
        create_dataset("cifar10", str(empty), "test")
    with pytest.raises(ValueError, match="mode must be 'static'"):
        create_dataset("cifar10", cifar_root, "test", mode="video")
    with pytest.raises(ValueError, match="val_size=0"):
        create_dataset("cifar10", cifar_root, "val", val_size=0)
    with pytest.raises(ValueError, match="multiple of 10"):
        create_dataset("cifar10", cifar_root, "val", val_size=15)
    os.remove(os.path.join(cifar_root, "cifar-10-batches-py", "data_batch_5"))
    with pytest.raises(FileNotFoundError, match="data_batch_5"):
        create_dataset("cifar10", cifar_root, "train", verbose=False)


# -- Jester -----------------------------------------------------------------------------------

CLASSES = ["Swiping Left", "Swiping Right", "Thumb Up"]


def _jester(root: str, split: str, **kwargs):
    return create_dataset("jester", root, split, mode="video", **kwargs)


def _frame(value: int, h: int = 30, w: int = 40) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def _jester_tree(root: str, extra_train: list | None = None) -> None:
    odd = [f"{k}.jpg" for k in range(1, 10)] + ["00010.jpg", "11.jpg", "012.jpg"]
    odd.remove("4.jpg")  # a missing frame: numbering gap 3 -> 5
    clips = {
        "101": [(f"{k:05d}.jpg", _frame(10 * k)) for k in range(1, 21)],
        "102": [(name, _frame(20 * int(name.split(".")[0]))) for name in odd],
        "103": [(f"{k:05d}.jpg", _frame(40 * k)) for k in range(1, 6)],  # short clip
        "201": [(f"{k:05d}.jpg", _frame(100)) for k in range(1, 8)],
        "202": [(f"{k:05d}.jpg", _frame(150)) for k in range(1, 8)],
        "301": [(f"{k:05d}.jpg", _frame(200)) for k in range(1, 4)],
    }
    splits = {
        "train": [("101", "Thumb Up"), ("102", "Swiping Left"), ("103", "Swiping Right")]
        + (extra_train or []),
        "validation": [("201", "Swiping Right"), ("202", "Thumb Up")],
        "test": [("301", None)],
    }
    write_jester(root, CLASSES, splits, clips)


@pytest.fixture
def jester_root(tmp_path):
    _jester_tree(str(tmp_path))
    return str(tmp_path)


def _values(x: torch.Tensor) -> list[int]:
    """Mean pixel value of each frame of a (3, T, H, W) clip."""
    return [round(float(v)) for v in (denormalise(x) * 255).mean(dim=(0, 2, 3))]


def test_jester_splits_labels_counts(jester_root):
    kw = {"verbose": False, "image_size": 16, "clip_length": 4}
    train = _jester(jester_root, "train", **kw)
    val = _jester(jester_root, "val", **kw)
    test = _jester(jester_root, "test", **kw)
    assert (len(train), len(val), len(test)) == (3, 2, 1)
    assert train.classes == CLASSES and train.num_classes == 3
    labels = {s["video"]: int(s["label"]) for s in (train[i] for i in range(3))}
    assert labels == {"101": 2, "102": 0, "103": 1}
    assert [int(val[i]["label"]) for i in range(2)] == [1, 2]
    assert int(test[0]["label"]) == -1
    assert train.summary["filtered"] == {"missing frames (gaps in a clip's numbering)": 1}
    assert train.summary["loaded"] == 3 and train.summary["num_corrupt"] == 0
    sample = train[0]
    assert sample["input"].shape == (3, 4, 16, 16) and sample["input"].dtype == torch.float32
    assert sample["label"].dtype == torch.int64


def test_jester_frames_sorted_by_number_and_gap_kept(jester_root):
    ds = _jester(jester_root, "val", clip_length=11, image_size=16, verbose=False)
    ds.clips = [c for c in _jester(jester_root, "train", verbose=False).clips if c[0] == "102"]
    # eval sampling with as many slots as frames takes every frame once, in numeric order
    got = _values(ds[0]["input"])
    assert abs(np.array(got) - 20 * np.array([1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12])).max() <= 3


def test_jester_short_clip_is_covered_end_to_end(jester_root):
    ds = _jester(jester_root, "train", clip_length=18, image_size=16,
                        augment=False, verbose=False)  # fmt: skip
    i = [c[0] for c in ds.clips].index("103")
    for epoch in range(3):
        ds.set_epoch(epoch)
        got = np.array(_values(ds[i]["input"]))
        assert got.shape == (18,) and (np.diff(got) >= -3).all()
        assert set(np.round(got / 40).astype(int)) == {1, 2, 3, 4, 5}


def test_jester_crop_and_stretch_sizes(jester_root):
    for aspect in ("crop", "stretch"):
        ds = _jester(jester_root, "val", image_size=20, clip_length=5,
                            aspect=aspect, verbose=False)  # fmt: skip
        assert ds[0]["input"].shape == (3, 5, 20, 20)


def test_segment_and_window_positions():
    for n in (1, 5, 17, 18, 40):
        pos = segment_positions(n, 18)
        assert pos.min() >= 0 and pos.max() <= n - 1 and (np.diff(pos) >= 0).all()
        assert len(set(pos.tolist())) == min(n, 18)  # covers every frame of a short clip
        rnd = segment_positions(n, 18, np.random.default_rng(0))
        assert (np.diff(rnd) >= 0).all() and rnd.max() <= n - 1
    assert window_positions(40, 5, 2).tolist() == [15, 17, 19, 21, 23]
    assert window_positions(6, 5, 2).tolist() == segment_positions(6, 5).tolist()


def test_jester_bad_input_names_the_file(jester_root, tmp_path):
    with pytest.raises(ValueError, match=r"jester-v1-train\.csv:4: unknown label name 'Wave'"):
        other = tmp_path / "other"
        _jester_tree(str(other), extra_train=[("101", "Wave")])
        _jester(str(other), "train", verbose=False)
    os.makedirs(os.path.join(jester_root, "20bn-jester-v1", "999"))
    with open(os.path.join(jester_root, "jester-v1-validation.csv"), "a") as fh:
        fh.write("999;Thumb Up\n")
    with pytest.raises(ValueError, match=r"20bn-jester-v1/999: no frame"):
        _jester(jester_root, "val", verbose=False)
    with pytest.warns(RuntimeWarning, match="999"):
        ds = _jester(jester_root, "val", on_error="skip", verbose=False)
    assert len(ds) == 2 and ds.summary["corrupt"][0]["path"].endswith("999")
    with open(os.path.join(jester_root, "jester-v1-validation.csv"), "a") as fh:
        fh.write("no-separator-line\n")
    with pytest.raises(ValueError, match=r"jester-v1-validation\.csv:4: expected '<id>;<label"):
        _jester(jester_root, "val", verbose=False)
    os.remove(os.path.join(jester_root, "jester-v1-labels.csv"))
    with pytest.raises(FileNotFoundError, match=r"jester-v1-labels\.csv"):
        _jester(jester_root, "train", verbose=False)
    with pytest.raises(ValueError, match="mode must be 'video'"):
        create_dataset("jester", jester_root, "train")
    with pytest.raises(ValueError, match="clip_length"):
        _jester(jester_root, "train", clip_length=0)


def test_jester_unreadable_frame_replaced_and_reported(jester_root):
    path = os.path.join(jester_root, "20bn-jester-v1", "201", "00003.jpg")
    with open(path, "wb") as fh:
        fh.write(b"\xff\xd8\xffgarbage")
    ds = _jester(jester_root, "val", clip_length=7, image_size=16,
                        on_error="skip", verbose=False)  # fmt: skip
    with pytest.warns(RuntimeWarning, match="00003.jpg"):
        x = ds[0]["input"]
    assert _values(x) == pytest.approx([100] * 7, abs=3)
    assert ds.summary["num_corrupt"] == 1
