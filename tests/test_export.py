"""hoconv export: factorized 2-D / 3-D, CP / Tucker models give PyTorch's outputs after export.

Oracle: ONNX Runtime (optional extra; skipped when absent) and torch.jit.load for
TorchScript, compared with the eager PyTorch model on a random batch to 1e-4.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from torch import nn

import hoconv
from hoconv.app import cli
from hoconv.app.export import export_checkpoint, export_model, max_difference

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and (
    importlib.util.find_spec("onnx") is not None
)
FORMATS = [
    pytest.param("onnx", marks=pytest.mark.skipif(not HAS_ORT, reason="onnxruntime absent")),
    "torchscript",
]


class Factorized(nn.Module):
    """Two factorized convs (one with the paper's in-rank-space BN + ReLU), BN, per-frame head."""

    def __init__(self, kind: str, dim: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        layer = hoconv.CPConv if kind == "cp" else hoconv.TuckerConv
        extra = {"norm": True, "activation": "relu"} if kind == "cp" else {}
        self.dim = dim
        self.c1 = layer(3, 8, 3, dim=dim, rank=5, padding=1, **extra)
        self.bn = (nn.BatchNorm2d if dim == 2 else nn.BatchNorm3d)(8)
        self.c2 = layer(8, 8, 3, dim=dim, rank=4, padding=1, stride=(1, 2, 2)[-dim:])
        self.fc = nn.Linear(8, 10)
        with torch.no_grad():  # non-trivial running statistics
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.bn(self.c1(x)))))
        if self.dim == 2:
            return self.fc(h.mean((2, 3)))  # (N, 10)
        return self.fc(h.mean((3, 4)).transpose(1, 2))  # (N, T, 10)


def meta(dim: int) -> dict:
    return {"model": {"name": f"factorized_{dim}d"},
            "config": {"task": "affect", "data_kwargs": {"image_size": 16, "clip_length": 6}}}  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["cp", "tucker"])
@pytest.mark.parametrize("dim", [2, 3])
def test_export_equals_pytorch(tmp_path, fmt, kind, dim):
    model = Factorized(kind, dim).eval()
    info = export_checkpoint((model, meta(dim)), tmp_path / f"m.{fmt}", fmt)
    assert info["input_shape"] == ["N", 3, *((6,) if dim == 3 else ()), 16, 16]
    assert info["max_abs_difference"] is not None and info["max_abs_difference"] < 1e-4
    # Independent check on another batch size (dynamic batch axis for ONNX).
    x = torch.randn(3, *info["input_shape"][1:])
    assert max_difference(model, tmp_path / f"m.{fmt}", fmt, x) < 1e-4
    sidecar = json.loads((tmp_path / f"m.{fmt}.json").read_text())
    assert sidecar["num_outputs"] == 10 and sidecar["normalisation"].startswith("RGB")


def test_a_wrong_export_is_detected(tmp_path):
    """The check is not vacuous: a file exported from other weights differs."""
    model = Factorized("cp", 2).eval()
    other = Factorized("cp", 2).eval()
    with torch.no_grad():
        other.fc.bias.add_(0.01)
    export_model(other, tmp_path / "m.pt", "torchscript", torch.zeros(1, 3, 16, 16))
    assert max_difference(model, tmp_path / "m.pt", "torchscript", torch.zeros(2, 3, 16, 16)) > 5e-3


def test_export_command(tmp_path, monkeypatch, capsys):
    import hoconv.app.predict.model as pm

    monkeypatch.setattr(cli, "COMMAND_MODULES", ("predict", "export"))
    monkeypatch.setattr(
        pm, "load_checkpoint", lambda path, device="cpu": (Factorized("tucker", 3), meta(3))
    )
    out = tmp_path / "m.ts"
    argv = ["export", "--checkpoint", "x.pt", "--format", "torchscript", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "max |difference|" in capsys.readouterr().out and out.exists()
    assert cli.main([*argv, "--image-size", "0"]) == 2
    assert "--image-size" in capsys.readouterr().err
    monkeypatch.setattr(pm, "load_checkpoint", lambda path, device="cpu": (nn.Conv1d(3, 2, 1), {}))
    assert cli.main(argv) == 2
    assert "1-D inputs" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["cp_resnet18_2d", "tucker_resnet18_2d", "cp_resnet18_3d"])
def test_zoo_models_export(tmp_path, fmt, name):
    models = pytest.importorskip("hoconv.models")
    torch.manual_seed(0)
    model = models.create_model(name, width=4, num_outputs=10).eval()
    info = export_checkpoint((model, meta(3 if name.endswith("3d") else 2)), tmp_path / "m", fmt)
    assert info["max_abs_difference"] < 1e-4
