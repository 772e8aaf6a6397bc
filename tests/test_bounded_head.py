"""Bounded valence / arousal head: tanh on V/A only, recorded in the checkpoint spec."""

from __future__ import annotations

import pytest
import torch

from hoconv.app.engine import build
from hoconv.app.engine import checkpoint as ckpt_io
from hoconv.heads import OutputHead
from hoconv.models import create_model


@pytest.mark.parametrize("kind", ["fc", "trl"])
def test_bounded_head_keeps_va_in_range_for_huge_inputs(kind):
    torch.manual_seed(0)
    head = OutputHead(6, 10, kind=kind, pool_size=2, bound_va=True)
    x = torch.randn(3, 6, 4, 4) * 1e6  # (N, C, H, W): pre-activations far outside [-1, 1]
    y = head(x)
    assert y.shape == (3, 10)
    assert y[:, :2].abs().max() <= 1.0 and y[:, :2].abs().max() > 0.99  # saturated, bounded
    unbounded = OutputHead(6, 10, kind=kind, pool_size=2)
    unbounded.load_state_dict(head.state_dict())
    raw = unbounded(x)
    assert raw[:, :2].abs().max() > 10  # the same weights without tanh leave [-1, 1]
    torch.testing.assert_close(y[:, :2], torch.tanh(raw[:, :2]))
    torch.testing.assert_close(y[:, 2:], raw[:, 2:])  # expression logits stay linear


def test_bounded_head_per_frame_outputs_on_clips():
    head = OutputHead(4, 2, bound_va=True)
    y = head(torch.randn(2, 4, 3, 5, 5) * 1e4, out_frames=6)  # (N, C, t, H, W) -> (N, 6, 2)
    assert y.shape == (2, 6, 2) and y.abs().max() <= 1.0


def test_bounded_head_needs_two_outputs():
    with pytest.raises(ValueError, match="bound_va"):
        OutputHead(4, 1, bound_va=True)


@pytest.mark.parametrize("name", ["cp_resnet18_2d", "r3d_18", "cp_convnet3d_s"])
def test_zoo_models_take_bound_va(name):
    torch.manual_seed(0)
    model = create_model(name, width=4, num_outputs=2, bound_va=True).eval()
    shape = (1, 3, 16, 16) if name.endswith("2d") else (1, 3, 16, 16, 16)
    for module in model.modules():  # scale every conv so the raw outputs are huge
        if isinstance(module, torch.nn.Linear):
            module.weight.data.mul_(1e5)
    assert model(torch.randn(shape)).abs().max() <= 1.0


def test_new_affect_models_are_bounded_and_old_checkpoints_are_not(tmp_path):
    cfg = {"task": "affect", "model": "cp_resnet18_2d", "model_kwargs": {"width": 4}}
    model, spec = build.make_model({**cfg, "num_outputs": 2}, dataset=None)
    assert spec["kwargs"]["bound_va"] is True and model.head.bound_va
    classify = {**cfg, "task": "classify", "num_outputs": 3}
    assert "bound_va" not in build.make_model(classify, dataset=None)[1]["kwargs"]
    # a checkpoint written before the key existed: no bound_va in its kwargs -> no tanh
    old_spec = {"name": "cp_resnet18_2d", "kwargs": {"width": 4, "num_outputs": 2}}
    old = ckpt_io.make_checkpoint(
        model_spec=old_spec, state_dict=model.state_dict(), epoch=1, config=cfg
    )
    ckpt_io.write_checkpoint(tmp_path / "old.pt", old)
    loaded, meta = ckpt_io.load_model(tmp_path / "old.pt")
    assert not loaded.head.bound_va and "bound_va" not in meta["model"]["kwargs"]
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    model.head.bound_va = False  # the same weights without the tanh: what old code computed
    torch.testing.assert_close(loaded(x), model(x))
    model.head.bound_va = True
    new = ckpt_io.make_checkpoint(
        model_spec=spec, state_dict=model.state_dict(), epoch=1, config=cfg
    )
    ckpt_io.write_checkpoint(tmp_path / "new.pt", new)
    assert ckpt_io.load_model(tmp_path / "new.pt")[0].head.bound_va
