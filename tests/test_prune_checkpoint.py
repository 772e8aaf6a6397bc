"""Pruned checkpoints: `hoconv prune` shrinks CP layers and every loader rebuilds the smaller model."""

import torch

from hoconv.app.cli import main
from hoconv.app.engine.checkpoint import (
    load_model,
    make_checkpoint,
    transduce_checkpoint,
    write_checkpoint,
)
from hoconv.models import create_model
from hoconv.pruning import cp_layers
from hoconv.rank import parameter_count


def _checkpoint_with_zero_weights(path):
    model = create_model("cp_resnet18_2d", width=4).eval()
    zeroed = 0
    with torch.no_grad():
        for _, layer in cp_layers(model):
            layer.weights[::3] = 0.0  # every third rank component of every CP layer
            zeroed += len(layer.weights[::3]) * (
                layer.in_channels + layer.out_channels + sum(layer.kernel_size) + 1
            )
    spec = {"name": "cp_resnet18_2d", "kwargs": {"width": 4}, "transductions": []}
    write_checkpoint(
        path, make_checkpoint(model_spec=spec, state_dict=model.state_dict(), epoch=3, config={})
    )
    return model, zeroed


def test_prune_command_shrinks_and_reloads(tmp_path, capsys):
    model, zeroed = _checkpoint_with_zero_weights(tmp_path / "dense.pt")
    code = main(["prune", "--checkpoint", str(tmp_path / "dense.pt"), "--out", str(tmp_path / "pruned.pt"),
                 "--report-dir", str(tmp_path / "report")])  # fmt: skip
    assert code == 0 and "parameters" in capsys.readouterr().out
    assert (tmp_path / "report" / "ranks.png").read_bytes()[:4] == b"\x89PNG"
    pruned, meta = load_model(tmp_path / "pruned.pt")
    assert parameter_count(model) - parameter_count(pruned) == zeroed
    assert meta["model"]["pruned_ranks"] and meta["epoch"] == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x))  # exactly-zero components removed
    # a pruned image model still transduces to video, and the result reloads
    transduce_checkpoint(tmp_path / "pruned.pt", tmp_path / "video.pt", dims=1, kernel_size=3)
    video, _ = load_model(tmp_path / "video.pt")
    clip = x[:, :, None].expand(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(video(clip)[:, 1], pruned(x), rtol=1e-4, atol=1e-5)


def test_prune_bad_input(tmp_path, capsys):
    assert (
        main(
            ["prune", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o.pt")]
        )
        == 2
    )
    assert "missing.pt" in capsys.readouterr().err
    _checkpoint_with_zero_weights(tmp_path / "c.pt")
    assert main(["prune", "--checkpoint", str(tmp_path / "c.pt"), "--out", str(tmp_path / "o.pt"),
                 "--threshold", "-1"]) == 2  # fmt: skip
    assert "threshold" in capsys.readouterr().err
