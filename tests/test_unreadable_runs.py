"""Unreadable samples are left out and counted by training and evaluation, never replaced;
a run with nothing readable to train or validate on stops with one line."""

import csv
import json

import pytest
import standins

from hoconv.app.cli import main
from hoconv.app.engine import TrainingError, evaluate, train


@pytest.fixture(autouse=True)
def _standins():
    standins.install()


def test_trainer_and_evaluate_count_unreadable_samples(tmp_path):
    # size 32, every 5th sample unreadable: 0, 5, ..., 30 -> 7 skipped, 25 readable
    cfg = standins.tiny_config(epochs=2, data_kwargs={"size": 32, "unreadable_every": 5})
    result = train(cfg, tmp_path / "run")
    for row in result["history"]:
        assert row["train_steps"] == 4  # 32 / 8: no batch is all unreadable
        assert row["train_samples"] == 25 and row["train_skipped"] == 7
        assert row["val_n"] == 25 and row["val_skipped"] == 7
    metrics = evaluate(tmp_path / "run" / "best.pt", tmp_path / "ev", split="val", plots_too=False)
    assert metrics["n"] == 25 and metrics["skipped"] == 7
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n"] == 25
    with open(tmp_path / "ev" / "predictions.csv") as fh:
        index = [int(row["index"]) for row in csv.DictReader(fh)]
    assert index == [i for i in range(32) if i % 5]  # each readable sample once, none repeated


def test_nothing_readable_stops_the_run(tmp_path):
    cfg = standins.tiny_config(epochs=1, data_kwargs={"size": 8, "unreadable_every": 1})
    with pytest.raises(TrainingError, match="no training step ran.*8 unreadable"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "best.pt").exists()


def _afew_unreadable(root, clips=3, keys=4):
    """AFEW-VA clips whose PNGs are all text files: every frame is unreadable."""
    for c in range(clips):
        clip = root / f"{c:03d}"
        clip.mkdir(parents=True)
        frames = {}
        for k in range(keys):
            frames[f"{k:05d}"] = {"valence": 1, "arousal": -1, "landmarks": [[5, 5]] * 68}
            (clip / f"{k:05d}.png").write_text("not a png")
        (clip / f"{clip.name}.json").write_text(
            json.dumps({"actor": f"a{c}", "video_id": clip.name, "frames": frames})
        )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_video_mode_with_every_frame_unreadable_fails_in_one_line(tmp_path, capsys):
    _afew_unreadable(tmp_path / "afew")
    argv = ["train", "--data", "afew_va", "--data-root", str(tmp_path / "afew"), "--mode",
            "video", "--model", "test_tiny3d", "--epochs", "1", "--batch-size", "1",
            "--workers", "0", "--clip-length", "2", "--image-size", "8", "--no-progress",
            "--device", "cpu", "--data-arg", "fractions=[1,1,1]", "--out", str(tmp_path / "run")]  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("hoconv train: error: ") and "no readable" in err[-1]
    assert "unreadable" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run" / "best.pt").exists()


def test_empty_validation_split_stops_the_run(tmp_path, monkeypatch):
    from hoconv.app.engine import build

    real = build.make_dataset

    def val_unreadable(cfg, split, **kwargs):
        if split == "val":
            return standins.TinyAffect("val", size=8, unreadable_every=1)
        return real(cfg, split, **kwargs)

    monkeypatch.setattr(build, "make_dataset", val_unreadable)
    with pytest.raises(TrainingError, match="no readable labelled sample in validation split"):
        train(standins.tiny_config(epochs=1), tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()
