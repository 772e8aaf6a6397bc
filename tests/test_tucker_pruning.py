"""Tucker rank selection: group lasso on the core's slices, proximal group soft-threshold, pruning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hoconv import functional as HF
from hoconv import pruning as P
from hoconv import rank as R
from hoconv.layers import CPConv, TuckerConv
from hoconv.transduction import transduce

DT = torch.float64
TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _dense_oracle(layer: TuckerConv, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """F.convNd (HF.conv_nd for 4-D, which has no torch op) on a reconstructed kernel."""
    if layer.dim in TORCH_CONV:
        return TORCH_CONV[layer.dim](
            x, kernel, layer.bias, layer.stride, layer.padding, layer.dilation
        )
    return HF.conv_nd(x, kernel, layer.bias, layer.stride, layer.padding, layer.dilation)


GEOMETRIES = [  # (dim, kernel, stride, padding, dilation, spatial size)
    (1, 5, 2, 2, 1, (11,)),
    (2, (3, 1), 1, (1, 0), (2, 1), (7, 6)),
    (3, 3, (1, 2, 1), 1, 1, (5, 6, 5)),
    (4, (3, 1, 2, 3), 1, (1, 0, 0, 1), 1, (4, 3, 4, 5)),
]


@pytest.mark.parametrize("dim, kernel, stride, padding, dilation, size", GEOMETRIES)
def test_pruned_tucker_layer_equals_the_unpruned_one(dim, kernel, stride, padding, dilation, size):
    torch.manual_seed(dim)
    layer = TuckerConv(5, 6, kernel, dim=dim, rank=(4, 3), stride=stride, padding=padding,
                       dilation=dilation, dtype=DT)  # fmt: skip
    with torch.no_grad():
        layer.core[1] = 0.0  # output rank 1 and input rank 2 are exactly zero groups
        layer.core[:, 2] = 0.0
    x = torch.randn(2, 5, *size, dtype=DT)
    kernel_before = layer.to_dense().detach()
    params_before = R.parameter_count(layer)
    report = P.prune(nn.Sequential(layer))
    assert layer.rank == (3, 2) and report.layers[0].rank_after == "(3, 2)"
    assert (report.layers[0].kept, report.layers[0].total) == (5, 7)
    assert params_before - R.parameter_count(layer) == (
        R.tucker_parameter_count(5, 6, layer.kernel_size, (4, 3), bias=True)
        - R.tucker_parameter_count(5, 6, layer.kernel_size, (3, 2), bias=True)
    )
    torch.testing.assert_close(layer(x), _dense_oracle(layer, x, kernel_before))
    torch.testing.assert_close(layer.to_dense(), kernel_before)


def test_tucker_group_lasso_penalty_and_group_soft_threshold():
    torch.manual_seed(0)
    model = nn.Sequential(TuckerConv(3, 4, 3, dim=2, rank=(3, 2), dtype=DT))
    core = model[0].core
    expected = sum(core[o].norm() for o in range(3)) + sum(core[:, i].norm() for i in range(2))
    torch.testing.assert_close(P.lasso_penalty(model), expected)
    with torch.no_grad():
        core[0] *= 1e-3  # a small output slice: zeroed by the threshold below
    before = core.detach().clone()
    t = 0.05
    zeros = P.proximal_step(model, t)
    # oracle: output groups first, then input groups, each scaled by max(1 - t / ||g||, 0)
    ref = before.clone()
    for o in range(3):
        ref[o] *= max(0.0, 1 - t / float(ref[o].norm()))
    for i in range(2):
        ref[:, i] *= max(0.0, 1 - t / float(ref[:, i].norm()))
    torch.testing.assert_close(core.detach(), ref)
    assert zeros == 1 and bool((core[0] == 0).all())


def test_normalize_factors_is_exact_and_gives_unit_factor_columns():
    torch.manual_seed(1)
    model = nn.Sequential(
        TuckerConv(3, 5, 3, dim=2, rank=(4, 2), padding=1, dtype=DT),
        CPConv(5, 4, 3, dim=2, rank=6, padding=1, dtype=DT),
    )
    x = torch.randn(2, 3, 6, 6, dtype=DT)
    before = model(x).detach()
    P.normalize_factors(model)
    torch.testing.assert_close(model(x), before)
    ones = torch.ones(4, dtype=DT)
    torch.testing.assert_close(model[0].out_factor.norm(dim=0), ones)
    torch.testing.assert_close(model[0].in_factor.norm(dim=1), ones[:2])


def test_adam_group_lasso_zeroes_the_surplus_slices_and_prune_keeps_outputs():
    """A rank-(4, 3) layer holding a rank-(2, 2) teacher plus small surplus slices."""
    torch.manual_seed(5)
    teacher = TuckerConv(3, 4, 3, dim=2, rank=(2, 2), padding=1, dtype=DT)
    torch.manual_seed(2)
    model = nn.Sequential(TuckerConv(3, 4, 3, dim=2, rank=(4, 3), padding=1, dtype=DT))
    layer = model[0]
    with torch.no_grad():
        layer.core.mul_(0.1)
        layer.core[:2, :2] = teacher.core
        layer.out_factor[:, :2] = teacher.out_factor
        layer.in_factor[:2] = teacher.in_factor
    x = torch.randn(16, 3, 6, 6, dtype=DT)
    target = teacher(x).detach()
    P.normalize_factors(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        (model(x) - target).square().mean().backward()
        opt.step()
        zeros = P.optimizer_proximal_step(model, opt, 0.001)
    out_norms, in_norms = P.tucker_group_norms(layer.core)
    assert (out_norms == 0).tolist() == [False, False, True, True]
    assert (in_norms == 0).tolist() == [False, False, True]
    assert zeros == 3 == P.component_counts(model)[0]
    before = model(x).detach()
    report = P.prune(model)
    assert layer.rank == (2, 2) and report.kept == 4
    torch.testing.assert_close(model(x), before)
    assert float((model(x) - target).square().mean().detach()) < 1e-3


def test_prune_transduced_tucker_layer_slices_its_temporal_factors():
    torch.manual_seed(3)
    video = transduce(nn.Sequential(TuckerConv(3, 4, 3, dim=2, rank=(3, 3), padding=1, dtype=DT)))
    layer = video[0]
    with torch.no_grad():
        for factor in layer.temporal_factors:
            factor.normal_()
        layer.core[:, 0] = 0.0
    x = torch.randn(1, 3, 4, 6, 6, dtype=DT)
    kernel_before = layer.to_dense().detach()
    P.prune(video)
    assert layer.rank == (3, 2) and layer.temporal_factors[0].shape[:2] == (3, 2)
    torch.testing.assert_close(layer(x), _dense_oracle(layer, x, kernel_before))


def test_shrink_to_rank_checks_the_rank():
    layer = TuckerConv(3, 4, 3, dim=2, rank=(3, 2))
    P.shrink_to_rank(layer, [2, 1])
    assert layer.rank == (2, 1) and layer.core.shape == (2, 1, 3, 3)
    for bad in ([3, 1], 2, [0, 1]):
        with pytest.raises(ValueError, match="does not fit"):
            P.shrink_to_rank(layer, bad)


def test_prune_command_on_a_tucker_checkpoint(tmp_path, capsys):
    from hoconv.app.cli import main
    from hoconv.app.engine.checkpoint import load_model, make_checkpoint, write_checkpoint
    from hoconv.models import create_model

    model = create_model("tucker_resnet18_2d", width=4).eval()
    with torch.no_grad():
        for _, layer in P.tucker_layers(model):
            layer.core[::2] = 0.0  # every other output rank of every Tucker layer
    spec = {"name": "tucker_resnet18_2d", "kwargs": {"width": 4}, "transductions": []}
    state = make_checkpoint(model_spec=spec, state_dict=model.state_dict(), epoch=1, config={})
    write_checkpoint(tmp_path / "t.pt", state)
    out = tmp_path / "pruned.pt"
    assert main(["prune", "--checkpoint", str(tmp_path / "t.pt"), "--out", str(out)]) == 0
    assert "rank after" in capsys.readouterr().out
    pruned, meta = load_model(out)
    ranks = meta["model"]["pruned_ranks"]
    assert ranks and all(isinstance(r, list) and len(r) == 2 for r in ranks.values())
    assert R.parameter_count(pruned) < R.parameter_count(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x))
