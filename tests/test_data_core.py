"""Registry, loading report, clips, face crops, transforms."""

import numpy as np
import pytest
import torch

import hoconv.app.data as data
from hoconv.app.data.clips import eval_windows, random_clip
from hoconv.app.data.faces import box_from_landmarks, crop_face
from hoconv.app.data.report import CorruptDataError, LoadReport
from hoconv.app.data.transforms import ClipAugment, denormalise, to_tensor


def test_registry_lists_and_rejects():
    names = data.list_datasets()
    for name in ("affectnet", "afew_va", "aff_wild2", "sewa", "synthetic"):
        assert name in names
    with pytest.raises(ValueError, match="already registered"):
        data.register("synthetic")(lambda **kw: None)
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        data.create_dataset("nope")
    with pytest.raises(ValueError, match="needs root"):
        data.create_dataset("afew_va", root=None)


def test_register_new_name_roundtrip():
    name = "_test_only_dataset"
    data.register(name)(
        lambda root=None, split="train", mode="static", **kw: (root, split, mode, kw)
    )
    try:
        assert data.create_dataset(name, root="r", split="val", mode="video", x=1) == (
            "r",
            "val",
            "video",
            {"x": 1},
        )
    finally:
        data._REGISTRY.pop(name)


def test_report_counts_and_raise():
    rep = LoadReport("d", "train", on_error="skip")
    rep.filter("a", 2)
    rep.filter("a")
    with pytest.warns(RuntimeWarning, match="bad.jpg"):
        rep.add_corrupt("/x/bad.jpg", "broken")
    s = rep.summary()
    assert (
        s["filtered"] == {"a": 3}
        and s["num_corrupt"] == 1
        and s["corrupt"][0]["path"] == "/x/bad.jpg"
    )
    assert "bad.jpg" in rep.format()
    with pytest.raises(CorruptDataError, match="bad.jpg"):
        LoadReport("d", "train", on_error="raise").add_corrupt("/x/bad.jpg", "broken")
    with pytest.raises(ValueError, match="on_error"):
        LoadReport("d", "train", on_error="ignore")


@pytest.mark.parametrize("n", [1, 5, 16, 17, 40, 100])
@pytest.mark.parametrize("length,stride", [(16, 1), (8, 3), (5, 2), (1, 1)])
def test_eval_windows_count_every_frame_once(n, length, stride):
    counts = np.zeros(n, dtype=int)
    for pos, new in eval_windows(n, length, stride):
        assert pos.shape == new.shape == (length,)
        assert pos.min() >= 0 and pos.max() < n
        np.add.at(counts, pos[new], 1)
        # frames inside a window are equally spaced by the stride (padding repeats the last)
        real = pos[: int(np.argmax(pos == pos.max())) + 1]
        assert np.all(np.diff(real) == stride)
    assert np.all(counts == 1)


def test_eval_windows_pad_short_video():
    [(pos, new)] = eval_windows(3, 8, 1)
    assert pos.tolist() == [0, 1, 2, 2, 2, 2, 2, 2]
    assert new.tolist() == [True] * 3 + [False] * 5


def test_random_clip_in_range_and_padding():
    rng = np.random.default_rng(0)
    for _ in range(50):
        pos, valid = random_clip(30, 8, 3, rng)
        assert valid.all() and pos.min() >= 0 and pos.max() < 30 and np.all(np.diff(pos) == 3)
    pos, valid = random_clip(4, 6, 1, rng)
    assert pos.tolist() == [0, 1, 2, 3, 3, 3] and valid.tolist() == [True] * 4 + [False] * 2
    with pytest.raises(ValueError, match="length"):
        random_clip(4, 0)


def test_crop_face_box_and_landmarks():
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 150:170] = 255  # a white square "face"
    out = crop_face(img, box=(150, 40, 20, 20), margin=0.0, size=20)
    assert out.shape == (20, 20, 3) and out.min() > 200  # the crop is exactly the square
    lms = np.array([[150, 40], [170, 60], [160, 50]], float)
    assert box_from_landmarks(lms) == (150.0, 40.0, 20.0, 20.0)
    out2 = crop_face(img, landmarks=lms, margin=1.0, size=40)  # 40 px square centred on it
    assert out2[10:30, 10:30].min() > 200 and out2[:5].max() == 0
    edge = crop_face(img, box=(190, 90, 20, 20), margin=0.0, size=20)  # half outside -> zeros
    assert edge[15:, 15:].max() == 0


def test_to_tensor_range_and_augment_consistency():
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    x = to_tensor(img)
    assert x.shape == (3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(
        denormalise(x) * 255, torch.from_numpy(img).permute(2, 0, 1).float(), atol=1e-4
    )
    clip = x.unsqueeze(1).repeat(1, 5, 1, 1)  # (3, T, H, W) identical frames
    aug = ClipAugment(flip_p=0.5, generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        out = aug(clip)
        assert out.shape == clip.shape
        assert torch.equal(out[:, 0], out[:, 4])  # same parameters on every frame
