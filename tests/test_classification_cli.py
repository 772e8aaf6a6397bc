"""`hoconv train` / `hoconv evaluate` on classification data, and the paper's recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from classification_fixtures import coloured_shape, write_cifar

from hoconv.app.classification import conv_parameter_count
from hoconv.app.cli import main
from hoconv.app.engine import config as config_io
from hoconv.models import create_model

CONFIGS = Path(__file__).resolve().parents[1] / "hoconv" / "app" / "configs"


@pytest.mark.parametrize(
    "name, model, wd",
    [("cifar10_mobilenet_v2", "mobilenet_v2_cifar", 4e-5),
     ("cifar10_cp_mobilenet_v2", "cp_mobilenet_v2_cifar", 1e-4)],
)  # fmt: skip
def test_cifar_recipes(name, model, wd):
    cfg = config_io.resolve("train", str(CONFIGS / f"{name}.yaml"))
    assert (cfg["task"], cfg["data"], cfg["model"], cfg["optimizer"]) == (
        "classify", "cifar10", model, "sgd"
    )  # fmt: skip
    assert (cfg["batch_size"], cfg["lr"], cfg["momentum"], cfg["weight_decay"]) == (
        128,
        0.1,
        0.9,
        wd,
    )
    assert (cfg["scheduler"], cfg["lr_milestones"], cfg["lr_gamma"], cfg["epochs"]) == (
        "multistep", [150, 250], 0.1, 400
    )  # fmt: skip


@pytest.mark.parametrize("model", ["convnet3d", "cp_convnet3d", "cp_convnet3d_s"])
def test_jester_recipes(model):
    cfg = config_io.resolve("train", str(CONFIGS / f"jester_{model}.yaml"))
    assert (cfg["task"], cfg["data"], cfg["mode"], cfg["model"]) == (
        "classify",
        "jester",
        "video",
        model,
    )
    assert cfg["data_kwargs"] == {"clip_length": 18, "image_size": 84}
    assert cfg["model_kwargs"] == {"temporal_output": "clip"}
    assert (cfg["batch_size"], cfg["optimizer"], cfg["lr"], cfg["momentum"]) == (
        32,
        "sgd",
        1e-3,
        0.9,
    )
    assert (cfg["weight_decay"], cfg["scheduler"], cfg["lr_gamma"]) == (1e-5, "plateau", 0.1)


@pytest.mark.slow
def test_train_and_evaluate_cifar_recipe(tmp_path):
    write_cifar(str(tmp_path / "data"), coloured_shape, per_batch=8, per_test=12)
    run, out = tmp_path / "run", tmp_path / "test"
    code = main([
        "train", "--config", str(CONFIGS / "cifar10_cp_mobilenet_v2.yaml"),
        "--data-root", str(tmp_path / "data"), "--data-arg", "val_size=8", "--epochs", "1",
        "--width", "8", "--batch-size", "8", "--max-train-batches", "2", "--workers", "0",
        "--no-progress", "--out", str(run),
    ])  # fmt: skip
    assert code == 0 and (run / "last.pt").is_file()
    code = main(["evaluate", "--checkpoint", str(run / "last.pt"), "--split", "test",
                 "--workers", "0", "--out", str(out)])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 12 and 0 <= metrics["top1"] <= metrics["top5"] <= 1
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    with torch.device("meta"):
        reference = create_model("cp_mobilenet_v2_cifar", num_outputs=10, width=8)
    assert metrics["conv_params"] == conv_parameter_count(reference)
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_bad_data_root(tmp_path, capsys):
    code = main(["train", "--config", str(CONFIGS / "cifar10_mobilenet_v2.yaml"),
                 "--data-root", str(tmp_path), "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 2 and "cifar-10-batches-py" in capsys.readouterr().err
