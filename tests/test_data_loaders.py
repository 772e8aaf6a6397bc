"""The real-data loaders on tiny fixture trees written in the published formats."""

import csv
import json
import os

import cv2
import numpy as np
import pytest
import torch

from hoconv.app.data import create_dataset
from hoconv.app.data.base import collate_skipping, read_rgb
from hoconv.app.data.report import CorruptDataError

RNG = np.random.default_rng(0)
QUIET = dict(verbose=False, image_size=16)


def _img(path, size=(24, 32)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), RNG.integers(0, 256, (*size, 3), dtype=np.uint8))


def _corrupt(path, data=b"not an image at all"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


# ---------------------------------------------------------------- AffectNet (original)
def _affectnet_original(root):
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    header = [
        "subDirectory_filePath",
        "face_x",
        "face_y",
        "face_width",
        "face_height",
        "facial_landmarks",
        "expression",
        "valence",
        "arousal",
    ]
    lms = ";".join(str(v) for v in RNG.uniform(5, 20, 136).round(2))
    rows = [  # (file, expression, valence, arousal)
        ("1/a.jpg", 1, 0.5, 0.2),  # kept
        ("1/b.jpg", 2, -0.4, -0.1),  # kept
        ("2/c.jpg", 8, 0.1, 0.1),  # kept, expression -> -1 (None)
        ("2/d.jpg", 9, 0.3, -0.3),  # kept, expression -> -1 (Uncertain)
        ("2/e.jpg", 10, -2, -2),  # dropped: No-face
        ("3/f.jpg", 3, -2, -2),  # dropped: V/A -2
        ("3/g.jpg", 6, 0.2, 0.7),  # corrupt image
    ]
    with open(lists / "training.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for f, e, v, a in rows:
            w.writerow([f, 4, 3, 14, 16, lms, e, v, a])
    with open(lists / "validation.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerow(["1/a.jpg", 4, 3, 14, 16, lms, 0, 0.0, 0.0])
    for f, *_ in rows[:-1]:
        _img(root / "Manually_Annotated_Images" / f)
    _corrupt(root / "Manually_Annotated_Images" / "3/g.jpg")


def test_affectnet_original_filters_and_counts(tmp_path):
    _affectnet_original(tmp_path)
    with pytest.warns(RuntimeWarning, match="g.jpg"):
        ds = create_dataset(
            "affectnet", str(tmp_path), split="train", val_fraction=0.0, verify="header", **QUIET
        )
    s = ds.summary
    assert s["loaded"] == len(ds) == 4
    assert s["filtered"] == {
        "expression 10 (No-face)": 1,
        "valence/arousal -2 (not annotated)": 1,
        "expression 8 (None) -> -1": 1,
        "expression 9 (Uncertain) -> -1": 1,
    }
    assert s["num_corrupt"] == 1 and s["corrupt"][0]["path"].endswith("g.jpg")
    samples = [ds[i] for i in range(len(ds))]
    assert sorted(int(x["expression"]) for x in samples) == [-1, -1, 1, 2]
    assert samples[0]["input"].shape == (3, 16, 16)
    assert {x["video"] for x in samples} == {"1", "2"}
    assert sorted(int(x["frame"]) for x in samples) == [0, 1, 2, 3]  # CSV row numbers
    with pytest.raises(CorruptDataError, match="g.jpg"):
        create_dataset(
            "affectnet", str(tmp_path), val_fraction=0.0, verify="header", on_error="raise", **QUIET
        )
    test = create_dataset("affectnet", str(tmp_path), split="test", **QUIET)
    assert len(test) == 1
    with pytest.raises(ValueError, match="static"):
        create_dataset("affectnet", str(tmp_path), mode="video", **QUIET)


def test_affectnet_holdout_is_a_partition(tmp_path):
    _affectnet_original(tmp_path)
    tr = create_dataset("affectnet", str(tmp_path), split="train", val_fraction=0.4, **QUIET)
    va = create_dataset("affectnet", str(tmp_path), split="val", val_fraction=0.4, **QUIET)
    key = lambda d: {(r.name, int(f)) for r in d.records for f in r.frames}  # noqa: E731
    assert key(tr) and key(va)
    assert not key(tr) & key(va) and len(key(tr) | key(va)) == 5  # g.jpg exists (not decoded)


def test_corrupt_detected_at_read_time(tmp_path):
    _affectnet_original(tmp_path)
    _corrupt(tmp_path / "Manually_Annotated_Images" / "3/g.jpg", b"\xff\xd8\xff\xe0garbage")
    ds = create_dataset("affectnet", str(tmp_path), val_fraction=0.0, verify="exists", **QUIET)
    assert len(ds) == 5  # passes the cheap check, fails at decode
    with pytest.warns(RuntimeWarning, match="g.jpg"):
        items = [ds[i] for i in range(len(ds))]  # the bad one is None, never a copy
    assert ds.summary["num_corrupt"] == 1 and sum(x is None for x in items) == 1
    kept = [x for x in items if x is not None]
    assert len({int(x["frame"]) for x in kept}) == 4  # each readable sample once
    batch = collate_skipping(items)
    assert batch["input"].shape[0] == 4 and collate_skipping([None, None]) is None
    strict = create_dataset("affectnet", str(tmp_path), val_fraction=0.0, on_error="raise", **QUIET)
    idx = [
        i for i, (v, p) in enumerate(strict.index) if strict.records[v].paths[p].endswith("g.jpg")
    ]
    with pytest.raises(CorruptDataError, match="g.jpg"):
        strict[idx[0]]


def test_affectnet_new_release(tmp_path):
    for folder, n in (("train_set", 4), ("val_set", 2)):
        for i in range(n):
            _img(tmp_path / folder / "images" / f"{i}.jpg", (20, 20))
            ann = tmp_path / folder / "annotations"
            ann.mkdir(parents=True, exist_ok=True)
            np.save(ann / f"{i}_exp.npy", np.array(str([1, 10, 3, 2][i])))
            np.save(ann / f"{i}_val.npy", np.array(str([0.5, -2, 0.1, -0.2][i])))
            np.save(ann / f"{i}_aro.npy", np.array(str([0.3, -2, 0.9, -0.5][i])))
            np.save(ann / f"{i}_lnd.npy", RNG.uniform(0, 20, 136))
    ds = create_dataset("affectnet", str(tmp_path), split="train", val_fraction=0.0, **QUIET)
    assert len(ds) == 3 and ds.summary["filtered"] == {"expression 10 (No-face)": 1}
    assert sorted(float(ds[i]["arousal"]) for i in range(3)) == pytest.approx([-0.5, 0.3, 0.9])
    assert (
        len(create_dataset("affectnet", str(tmp_path), split="test", crop="landmarks", **QUIET))
        == 1
    )  # id 1 is No-face


# ---------------------------------------------------------------- AFEW-VA
def _afew(root, clip, actor, keys, bad=None):
    frames = {}
    for k in keys:
        frames[k] = {
            "valence": int(RNG.integers(-10, 11)),
            "arousal": int(RNG.integers(-10, 11)),
            "landmarks": RNG.uniform(4, 20, (68, 2)).round(1).tolist(),
        }
        _img(root / clip / f"{k}.png")
    if bad:
        frames[bad] = {"valence": 11, "arousal": 0, "landmarks": frames[keys[0]]["landmarks"]}
        _img(root / clip / f"{bad}.png")
    with open(root / clip / f"{clip}.json", "w") as fh:
        json.dump({"actor": actor, "video_id": clip, "frames": frames}, fh)
    return frames


@pytest.mark.filterwarnings("ignore:.*unreadable file.*00005.png")
def test_afew_va_keys_gaps_and_split(tmp_path):
    meta = {}
    for i, actor in enumerate(["ann", "bob", "cid", "dan", "eve", "fay"]):
        clip = f"{i + 1:03d}"
        keys = ["00001", "00002", "00005", "00006"] if i % 2 else ["00000", "00001", "00003"]
        meta[clip] = _afew(tmp_path, clip, actor, keys, bad="00009" if i == 0 else None)
    os.remove(tmp_path / "002" / "00005.png")  # a key without its PNG
    seen_actors, total = {}, 0
    for split in ("train", "val", "test"):
        ds = create_dataset("afew_va", str(tmp_path), split=split, fractions=(4, 1, 1), **QUIET)
        for rec in ds.records:
            seen_actors.setdefault(rec.subject, set()).add(split)
            frames = meta[rec.name]
            for f, v, a in zip(rec.frames, rec.valence, rec.arousal):
                key = f"{f:05d}"  # the JSON key, not the position
                assert v == pytest.approx(frames[key]["valence"] / 10)
                assert a == pytest.approx(frames[key]["arousal"] / 10)
        total += ds.summary["loaded"]
        if any(r.name == "001" for r in ds.records):
            assert ds.summary["filtered"] == {"valence/arousal outside [-10, 10]": 1}
        if any(r.subject == "bob" for r in ds.records):
            assert [c["path"].endswith("00005.png") for c in ds.summary["corrupt"]] == [True]
    assert all(len(s) == 1 for s in seen_actors.values()) and len(seen_actors) == 6
    assert total == 3 * 3 + 3 * 4 - 1


def test_afew_va_video_mode_windows(tmp_path):
    keys = [f"{k:05d}" for k in (1, 2, 3, 5, 6, 8, 9, 10, 11)]
    _afew(tmp_path, "001", "x", keys)
    _afew(tmp_path, "002", "y", keys[:2])
    _afew(tmp_path, "003", "z", keys[:3])
    ds = create_dataset(
        "afew_va",
        str(tmp_path),
        split="train",
        mode="video",
        sampling="windows",
        clip_length=4,
        fractions=(1, 1, 1),
        **QUIET,
    )
    counted = []
    for i in range(len(ds)):
        s = ds[i]
        assert s["input"].shape == (3, 4, 16, 16) and s["valence"].shape == (4,)
        counted += [(s["video"], f) for f in s["frames"][s["mask"]].tolist()]
    expected = [(r.name, int(f)) for r in ds.records for f in r.frames]
    assert sorted(counted) == sorted(expected)
    rnd = create_dataset(
        "afew_va",
        str(tmp_path),
        split="train",
        mode="video",
        clip_length=4,
        fractions=(1, 1, 1),
        seed=0,
        **QUIET,
    )
    assert rnd.sampling == "random" and rnd[0]["frames"].shape == (4,)


# ---------------------------------------------------------------- Aff-Wild2
def test_aff_wild2_codes_and_missing_jpg(tmp_path):
    ann = tmp_path / "Annotations" / "VA_Estimation_Challenge"
    values = {
        "vidA": [(0.1, 0.2), (-5, -5), (0.3, -0.4), (0.5, 0.5), (-0.2, 0.9)],
        "vidB_right": [(0.0, 0.1), (0.2, -5)],
    }
    for split_dir in ("Train_Set", "Validation_Set"):
        (ann / split_dir).mkdir(parents=True)
    for video, rows in values.items():
        with open(ann / "Train_Set" / f"{video}.txt", "w") as fh:
            fh.write("valence,arousal\n" + "".join(f"{v},{a}\n" for v, a in rows))
        for i in range(len(rows)):
            _img(tmp_path / "cropped_aligned" / video / f"{i + 1:05d}.jpg", (16, 16))
    os.remove(tmp_path / "cropped_aligned" / "vidA" / "00004.jpg")  # no face on frame 4
    _corrupt(tmp_path / "cropped_aligned" / "vidA" / "00005.jpg")
    with pytest.warns(RuntimeWarning, match="00005.jpg"):
        ds = create_dataset("aff_wild2", str(tmp_path), verify="header", **QUIET)
    s = ds.summary
    assert s["filtered"] == {"-5 (unannotated)": 2, "missing jpg (no face)": 1}
    assert s["num_corrupt"] == 1 and s["loaded"] == len(ds) == 3
    got = sorted(
        (ds[i]["video"], int(ds[i]["frame"]), round(float(ds[i]["valence"]), 3)) for i in range(3)
    )
    assert got == [("vidA", 1, 0.1), ("vidA", 3, 0.3), ("vidB_right", 1, 0.0)]
    vid = create_dataset(
        "aff_wild2", str(tmp_path), mode="video", sampling="windows", clip_length=8, **QUIET
    )
    with pytest.warns(RuntimeWarning, match="00005.jpg"):  # decoded at read time here
        a = next(vid[i] for i in range(len(vid)) if vid[i]["video"] == "vidA")
    assert a["mask"].tolist() == [True, False, True, False, False, False, False, False]
    assert a["frames"][:5].tolist() == [1, 2, 3, 4, 5]
    assert float(a["input"][:, 3].max()) == -1.0  # missing jpg -> black frame
    assert len(create_dataset("aff_wild2", str(tmp_path), split="val", **QUIET)) == 0
    with pytest.raises(FileNotFoundError, match="not public"):
        create_dataset("aff_wild2", str(tmp_path), split="test", **QUIET)


# ---------------------------------------------------------------- SEWA
def test_sewa_timestamp_alignment_with_delay(tmp_path):
    (tmp_path / "labels").mkdir()
    times = np.round(np.arange(0, 1.0, 0.1), 1)  # 0.0 .. 0.9 s
    with open(tmp_path / "labels" / "Train_DE_01.csv", "w") as fh:
        fh.write("name;timestamp;arousal;valence;liking\n")
        for t in times:
            fh.write(f"Train_DE_01;{t:.1f};{-t:.3f};{t:.3f};0\n")  # valence = t, arousal = -t
    with open(tmp_path / "labels" / "Devel_HU_02.csv", "w") as fh:
        fh.write("name;timestamp;arousal;valence;liking\n0.0;oops\n")  # malformed
    for n in range(6):  # 10 fps frames 0..5 -> t = 0.0 .. 0.5
        _img(tmp_path / "frames" / "Train_DE_01" / f"{n:05d}.jpg", (16, 16))
    ds = create_dataset("sewa", str(tmp_path), fps=10.0, delay=0.25, **QUIET)
    rec = ds.records[0]
    assert rec.frames.tolist() == list(range(6))
    # frame n at t = n / 10 gets the label at t + 0.25 (linear interpolation)
    assert rec.valence == pytest.approx(np.arange(6) / 10 + 0.25, abs=1e-6)
    assert rec.arousal == pytest.approx(-(np.arange(6) / 10 + 0.25), abs=1e-6)
    assert ds.summary["loaded"] == 6 and ds.summary["filtered"] == {}
    late = create_dataset("sewa", str(tmp_path), fps=10.0, delay=0.5, **QUIET)
    assert late.summary["filtered"] == {"outside annotated time range": 1} and len(late) == 5
    with pytest.warns(RuntimeWarning, match="Devel_HU_02.csv"):
        dev = create_dataset("sewa", str(tmp_path), split="val", **QUIET)
    assert len(dev) == 0 and dev.summary["num_corrupt"] == 1
    with pytest.raises(FileNotFoundError, match="no labels"):
        create_dataset("sewa", str(tmp_path), cultures=("HU",), **QUIET)
    v = create_dataset(
        "sewa",
        str(tmp_path),
        fps=10.0,
        delay=0.5,
        mode="video",
        clip_length=4,
        sampling="windows",
        **QUIET,
    )
    masks = torch.cat([v[i]["mask"][v[i]["mask"]] for i in range(len(v))])
    assert int(masks.sum()) == 5


def test_truncated_jpeg_is_corrupt(tmp_path):
    _affectnet_original(tmp_path)
    good = tmp_path / "Manually_Annotated_Images" / "1/a.jpg"
    assert read_rgb(str(good)) is not None
    data = good.read_bytes()
    _corrupt(tmp_path / "Manually_Annotated_Images" / "3/g.jpg", data[: len(data) // 2])
    assert read_rgb(str(tmp_path / "Manually_Annotated_Images" / "3/g.jpg")) is None
