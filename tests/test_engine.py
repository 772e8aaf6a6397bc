"""The training loop: learning, logs, metrics on gathered predictions, NaN stop, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import standins
import torch
import yaml

from hoconv.app.engine import (
    Framewise,
    TrainingError,
    evaluate,
    load_model,
    predict_dataset,
    read_checkpoint,
    train,
)

HERE = Path(__file__).parent
ROOT = HERE.parent


@pytest.fixture(autouse=True)
def _standins():
    standins.install()


def _ccc(y, p):
    """Lin's CCC with population moments, written out independently of the library."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    cov = np.mean((y - y.mean()) * (p - p.mean()))
    return 2 * cov / (y.var() + p.var() + (y.mean() - p.mean()) ** 2)


def test_train_static_learns_and_writes_run(tmp_path):
    cfg = standins.tiny_config(epochs=3)
    res = train(cfg, tmp_path / "run")
    hist = res["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert [h["lr"] for h in hist] == pytest.approx([0.01, 0.005, 0.0025])  # StepLR x0.5 / epoch
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert res["best"]["score"] == max(h["score"] for h in hist)
    assert res["best"]["score"] > 0.15  # V/A are in the pixels: clearly better than chance (0)
    run = tmp_path / "run"
    assert read_checkpoint(run / "best.pt")["epoch"] == res["best"]["epoch"]
    assert read_checkpoint(run / "last.pt")["epoch"] == 3
    assert len(json.loads((run / "log.json").read_text())) == 3
    assert (run / "log.csv").read_text().count("\n") == 4
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"] == "test_tiny2d" and saved["epochs"] == 3 and saved["lr_step"] == 1


def test_validation_metrics_are_computed_on_all_gathered_predictions(tmp_path):
    cfg = standins.tiny_config(epochs=1, mode="video", model="test_tiny3d")
    res = train(cfg, tmp_path / "run")
    model, _ = load_model(tmp_path / "run" / "last.pt")
    val = standins.TinyAffect("val", "video", size=32)
    ys, ps = [], []
    with torch.no_grad():
        for i in range(len(val)):  # one clip at a time: no batching involved in the oracle
            s = val[i]
            out = model(s["input"][None])[0]  # (T, O)
            ys.append(s["valence"][s["mask"]].numpy())
            ps.append(out[s["mask"], 0].numpy())
    y, p = np.concatenate(ys), np.concatenate(ps)
    m = res["history"][-1]
    assert m["val_n"] == len(y) == 32 * 4 - sum(i % 3 == 2 for i in range(32))
    assert m["val_valence_ccc"] == pytest.approx(_ccc(y, p), abs=1e-6)


def test_framewise_2d_model_on_clips_equals_per_frame_predictions():
    model = standins.TinyNet(dim=2).eval()
    clip = torch.randn(2, 3, 5, 8, 8)
    out = Framewise(model)(clip)
    assert out.shape == (2, 5, 2)
    for t in range(5):
        torch.testing.assert_close(out[:, t], model(clip[:, :, t]))


def test_predict_dataset_keeps_every_sample_once():
    data = standins.TinyAffect("test", "static", size=13)
    p = predict_dataset(standins.TinyNet(dim=2), data, batch_size=4)
    assert p["index"].tolist() == list(range(13))
    assert p["valence"] == pytest.approx([float(data[i]["valence"]) for i in range(13)])


def test_evaluate_writes_metrics_and_figures(tmp_path):
    train(standins.tiny_config(epochs=1), tmp_path / "run")
    m = evaluate(tmp_path / "run" / "best.pt", tmp_path / "ev", overrides={"mode": "video"})
    on_disk = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(on_disk) == {"valence", "arousal", "n", "skipped"} and on_disk["skipped"] == 0
    assert set(on_disk["valence"]) == {"rmse", "sagr", "pcc", "ccc"}
    assert on_disk["n"] == m["n"] > 32  # every labelled frame of the test clips
    for name in ("va_over_time.png", "circumplex.png", "predictions.csv"):
        assert (tmp_path / "ev" / name).stat().st_size > 1000


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = standins.tiny_config(epochs=3, model_kwargs={"nan_after_steps": 5})  # 4 steps / epoch
    with pytest.raises(
        TrainingError, match=r"non-finite training loss .* epoch 2 step 2.*last\.pt"
    ):
        train(cfg, tmp_path / "run")
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_model_mode_mismatch_and_existing_run_are_refused(tmp_path):
    with pytest.raises(ValueError, match="3-D .*--mode static"):
        train(standins.tiny_config(model="test_tiny3d"), tmp_path / "a")
    train(standins.tiny_config(epochs=1), tmp_path / "b")
    with pytest.raises(ValueError, match="already holds a run"):
        train(standins.tiny_config(epochs=1), tmp_path / "b")


def _cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(HERE / "standin_cli.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path):
    args = [
        "train",
        "--data",
        "test_tiny",
        "--model",
        "test_tiny2d",
        "--epochs",
        "4",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--lr-step",
        "1",
        "--lr-gamma",
        "0.5",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "--data-arg",
        "size=32",
        "--data-arg",
        "delay=0.004",
    ]
    run = tmp_path / "killed"
    proc = _cli([*args, "--out", str(run)])
    deadline = time.time() + 60
    while not (run / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.1)  # into the next epoch
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= killed_at < 4
    resumed = _cli([*args, "--out", str(run), "--resume"])
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    reference = train(standins.tiny_config(epochs=4, data_kwargs={"size": 32}), tmp_path / "ref")
    a, b = read_checkpoint(run / "last.pt"), read_checkpoint(tmp_path / "ref" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    for key in b["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-5, atol=1e-6)
    assert [h["score"] for h in a["history"]] == pytest.approx(
        [h["score"] for h in reference["history"]], abs=1e-5
    )


def test_resume_reproduces_runs_with_random_clip_sampling(tmp_path):
    pytest.importorskip("hoconv.app.data.synthetic")
    data = {
        "num_subjects": 6,
        "videos_per_subject": 2,
        "frames_per_video": 10,
        "image_size": 8,
        "clip_length": 4,
    }
    cfg = standins.tiny_config(
        data="synthetic", mode="video", model="test_tiny3d", batch_size=4, data_kwargs=data
    )
    train({**cfg, "epochs": 1}, tmp_path / "a")
    train({**cfg, "epochs": 3}, tmp_path / "a", resume=True)
    train({**cfg, "epochs": 3}, tmp_path / "b")
    a, b = read_checkpoint(tmp_path / "a" / "last.pt"), read_checkpoint(tmp_path / "b" / "last.pt")
    for key in b["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-6, atol=1e-7)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


def test_classification_task_reports_top1_top5_on_all_samples(tmp_path):
    cfg = standins.tiny_config(
        task="classify", epochs=2, data_kwargs={"size": 32, "classify": True}
    )
    res = train(cfg, tmp_path / "run")
    m = res["best"]["metrics"]
    assert set(m) == {"top1", "top5", "n", "unlabelled", "skipped"} and m["n"] == 32
    assert m["skipped"] == 0
    assert m["top5"] == 1.0 and m["unlabelled"] == 0  # 4 classes
    model, _ = load_model(tmp_path / "run" / "best.pt")
    val = standins.TinyAffect("val", size=32, classify=True)
    with torch.no_grad():
        pred = [int(model(val[i]["input"][None]).argmax()) for i in range(32)]
    want = np.mean([p == int(val[i]["label"]) for i, p in enumerate(pred)])
    assert m["top1"] == pytest.approx(want)
    assert m["top1"] > 0.4  # chance is 0.25
    ev = evaluate(tmp_path / "run" / "best.pt", tmp_path / "ev", overrides={}, split="val")
    assert ev["top1"] == pytest.approx(m["top1"]) and ev["n"] == 32
    assert np.asarray(ev["confusion_matrix"]).sum() == 32 and ev["conv_params"] > 0
    assert (tmp_path / "ev" / "confusion_matrix.png").exists()
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["top1"] == ev["top1"]


def test_init_inherits_the_input_size_of_its_checkpoint(tmp_path):
    train(standins.tiny_config(epochs=1, data_kwargs={"size": 16, "image_size": 6}), tmp_path / "a")
    init = str(tmp_path / "a" / "best.pt")
    res = train(standins.tiny_config(epochs=1, init=init), tmp_path / "b")
    saved = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert saved["data_kwargs"] == {"size": 32, "image_size": 6} and res["history"]
    cfg = standins.tiny_config(epochs=1, init=init, data_kwargs={"size": 16, "image_size": 10})
    train(cfg, tmp_path / "c")  # an explicit size wins
    assert (
        yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["data_kwargs"]["image_size"]
        == 10
    )
