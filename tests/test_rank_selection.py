"""Automatic rank selection: lasso on CP weights, proximal step, physical pruning, reports."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from hoconv import functional as HF
from hoconv import pruning as P
from hoconv import rank as R
from hoconv.layers import BatchNorm, CPConv
from hoconv.transduction import transduce

DT = torch.float64


def cp_model(psi: bool = False, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    extra = {"norm": True, "activation": "prelu"} if psi else {}
    return nn.Sequential(
        CPConv(3, 6, 3, dim=2, rank=8, padding=1, **extra),
        nn.ReLU(),
        CPConv(6, 4, 3, dim=2, rank=7, padding=1),
    ).to(DT)


def per_rank_params(layer: CPConv) -> int:
    return layer.in_channels + layer.out_channels + sum(layer.kernel_size) + 1


def test_lasso_penalty_is_the_sum_of_absolute_weights_and_has_a_gradient():
    model = cp_model()
    with torch.no_grad():
        model[0].weights.uniform_(-1, 1)
        model[2].weights.uniform_(-1, 1)
    penalty = P.lasso_penalty(model)
    expected = model[0].weights.abs().sum() + model[2].weights.abs().sum()
    torch.testing.assert_close(penalty, expected)
    penalty.backward()
    torch.testing.assert_close(model[0].weights.grad, model[0].weights.detach().sign())


def _train(model: nn.Module, gamma: float, steps: int, proximal: bool, lr: float = 0.05) -> None:
    torch.manual_seed(123)
    x = torch.randn(8, 3, 6, 6, dtype=DT)
    target = torch.randn(8, 4, 6, 6, dtype=DT) * 0.1
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(x) - target).square().mean()
        if gamma and not proximal:
            loss = loss + gamma * P.lasso_penalty(model)
        loss.backward()
        opt.step()
        if proximal:
            P.proximal_step(model, lr * gamma)


def test_lasso_changes_the_trained_weights():
    plain, lasso = cp_model(), cp_model()
    _train(plain, 0.0, 8, proximal=False)
    _train(lasso, 0.05, 8, proximal=False)
    for a, b in zip(plain[::2], lasso[::2]):
        assert not torch.allclose(a.weights, b.weights)
        assert b.weights.abs().sum() < a.weights.abs().sum() - 8 * 0.05 * 0.05 * a.rank / 2


def test_proximal_training_reaches_exact_zeros_then_prune_removes_them():
    model = cp_model(psi=True)
    P.normalize_cp_weights(model)
    _train(model, 0.3, 10, proximal=True)
    zeros = [int((layer.weights == 0).sum()) for layer in model[::2]]
    assert sum(zeros) > 0
    assert all(z < layer.rank for z, layer in zip(zeros, model[::2]))
    model.eval()
    x = torch.randn(2, 3, 6, 6, dtype=DT)
    before_out = model(x)
    before_params = R.parameter_count(model)
    before_macs = R.macs(model, (2, 3, 6, 6))
    ranks = [layer.rank for layer in model[::2]]
    report = P.prune(model, threshold=0.0)
    assert [layer.rank for layer in model[::2]] == [r - z for r, z in zip(ranks, zeros)]
    assert [(row.kept, row.total) for row in report.layers] == [
        (r - z, r) for r, z in zip(ranks, zeros)
    ]
    # factor rows + weights, plus the Psi channels (BN weight/bias, PReLU weight on both axes)
    psi_per_rank = [2 * (2 + 1), 0]
    removed = sum(
        z * (per_rank_params(layer) + extra)
        for z, layer, extra in zip(zeros, model[::2], psi_per_rank)
    )
    assert (
        before_params - R.parameter_count(model)
        == removed
        == report.params_before - report.params_after
    )
    fresh_macs = [
        CPConv(layer.in_channels, layer.out_channels, 3, dim=2, rank=layer.rank, padding=1).macs(
            (2, layer.in_channels, 6, 6)
        )
        for layer in model[::2]
    ]
    assert R.macs(model, (2, 3, 6, 6)) == sum(fresh_macs) < before_macs
    torch.testing.assert_close(model(x), before_out)
    bn = model[0].psi[0][0]
    assert isinstance(bn, BatchNorm) and bn.num_features == model[0].rank
    assert bn.running_mean.shape == (model[0].rank,) and model[0].psi[1][1].weight.shape == (
        model[0].rank,
    )


def test_prune_above_zero_removes_exactly_the_components_contribution():
    torch.manual_seed(5)
    layer = CPConv(3, 4, 3, dim=2, rank=6, padding=1).to(DT)
    with torch.no_grad():
        layer.weights.copy_(torch.tensor([0.05, -1.0, 0.02, 2.0, -0.08, 1.5], dtype=DT))
    removed = torch.tensor([0, 2, 4])
    x = torch.randn(2, 3, 5, 5, dtype=DT)
    with torch.no_grad():
        contribution = HF.cp_conv(
            x, layer.weights[removed], layer.in_factor[removed],
            [f[removed] for f in layer.kernel_factors], layer.out_factor[:, removed], None, 1, 1,
        )  # fmt: skip
        before = layer(x)
    model = nn.Sequential(layer)
    report = P.prune(model, threshold=0.1)
    assert report.layers[0].kept == 3 and layer.rank == 3
    with torch.no_grad():
        torch.testing.assert_close(before - layer(x), contribution)
    assert layer.weights.tolist() == [-1.0, 2.0, 1.5]


def test_pruning_every_component_keeps_the_largest_and_warns():
    model = cp_model()
    with torch.no_grad():
        model[0].weights.copy_(torch.linspace(-0.5, 0.3, 8, dtype=DT))
    with pytest.warns(UserWarning, match="keeping the largest"):
        report = P.prune(model, threshold=10.0)
    assert model[0].rank == 1 and model[0].weights.item() == -0.5
    assert [row.kept for row in report.layers] == [1, 1]
    assert model(torch.randn(1, 3, 4, 4, dtype=DT)).shape == (1, 4, 4, 4)


def test_prune_keeps_requires_grad_and_works_on_transduced_models():
    video = transduce(cp_model(psi=True))
    with torch.no_grad():
        video[0].weights[:3] = 0
    from hoconv.transduction import phase, temporal_parameters

    phase(video, "temporal")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.prune(video)
    assert video[0].rank == 5 and video[0].kernel_factors[0].shape == (5, 3)
    assert {n for n, p in video.named_parameters() if p.requires_grad} == {
        n for n, _ in temporal_parameters(video)
    }
    assert video(torch.randn(1, 3, 3, 4, 4, dtype=DT)).shape == (1, 4, 3, 4, 4)


def test_normalize_cp_weights_is_exact():
    for psi in (False, True):
        model = cp_model(psi=psi).eval()
        x = torch.randn(2, 3, 5, 5, dtype=DT)
        before = model(x)
        P.normalize_cp_weights(model)
        torch.testing.assert_close(model(x), before)
        norms = torch.linalg.vector_norm(model[2].out_factor, dim=0)
        torch.testing.assert_close(norms, torch.ones_like(norms))


def test_report_table_and_plot(tmp_path):
    model = cp_model()
    with torch.no_grad():
        model[0].weights[:2] = 0
    report = P.prune(model)
    table = P.rank_report_table(report)
    assert "| 0 | 6 | 8 | 75.0 |" in table and "| 2 | 7 | 7 | 100.0 | 0 |" in table
    assert f"| **total** | 13 | 15 | 86.7 | {report.params_before - report.params_after} |" in table
    path = P.plot_rank_report(report, tmp_path / "ranks.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_bad_input():
    dense = nn.Sequential(nn.Conv2d(3, 4, 3))
    for fn in (P.lasso_penalty, P.prune, lambda m: P.proximal_step(m, 0.1)):
        with pytest.raises(ValueError, match="CP or Tucker layers"):
            fn(dense)
    with pytest.raises(ValueError, match="threshold"):
        P.prune(cp_model(), threshold=-1.0)
    with pytest.raises(ValueError, match="threshold"):
        P.proximal_step(cp_model(), float("nan"))


def test_prune_reports_the_smallest_weight_and_hints_when_nothing_is_pruned():
    model = cp_model()
    with torch.no_grad():
        model[0].weights.fill_(0.5)
        model[2].weights.fill_(0.8)
        model[0].weights[3] = -0.25
    report = P.prune(model)
    assert report.kept == report.total and report.smallest_weight == pytest.approx(0.25)
    hint = P.prune_hint(report)
    assert hint is not None and "0.25" in hint and "--threshold" in hint and "--lasso" in hint
    assert "smallest |weight| 0.25" in P.rank_report_table(report)
    pruned = P.prune(model, threshold=0.3)
    assert pruned.kept == report.total - 1 and P.prune_hint(pruned) is None


def _train_adam(model: nn.Module, gamma: float, steps: int, lr: float = 0.01) -> None:
    """The trainer's lasso recipe: normalise, then Adam steps each followed by the prox step."""
    torch.manual_seed(123)
    x = torch.randn(8, 3, 6, 6, dtype=DT)
    target = torch.randn(8, 4, 6, 6, dtype=DT) * 0.1
    P.normalize_cp_weights(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (model(x) - target).square().mean().backward()
        opt.step()
        P.optimizer_proximal_step(model, opt, gamma)


def test_adam_proximal_lasso_reaches_exact_zeros_and_prune_keeps_outputs():
    model = cp_model()
    _train_adam(model, gamma=0.001, steps=40)
    zeros = [int((layer.weights == 0).sum()) for layer in model[::2]]
    assert sum(zeros) > 0
    assert all(z < layer.rank for z, layer in zip(zeros, model[::2]))
    model.eval()
    x = torch.randn(2, 3, 6, 6, dtype=DT)
    before = model(x)
    ranks = [layer.rank for layer in model[::2]]
    report = P.prune(model, threshold=0.0)
    assert [layer.rank for layer in model[::2]] == [r - z for r, z in zip(ranks, zeros)]
    assert report.kept == sum(ranks) - sum(zeros)
    torch.testing.assert_close(model(x), before)


def test_optimizer_proximal_step_uses_adams_step_scale_and_sgds_lr():
    for kind in ("adam", "sgd"):
        model = cp_model()
        opt = (
            torch.optim.Adam(model.parameters(), lr=0.01)
            if kind == "adam"
            else torch.optim.SGD(model.parameters(), lr=0.01)
        )
        (model(torch.randn(2, 3, 6, 6, dtype=DT)).square().mean()).backward()
        opt.step()
        w = model[0].weights.detach().clone()
        if kind == "adam":
            state = opt.state[model[0].weights]
            v_hat = state["exp_avg_sq"] / (1 - 0.999 ** float(state["step"]))
            threshold = 0.01 * 0.5 / (v_hat.sqrt() + 1e-8)
        else:
            threshold = torch.full_like(w, 0.01 * 0.5)
        P.optimizer_proximal_step(model, opt, 0.5)
        expected = torch.sign(w) * (w.abs() - threshold).clamp_min(0)
        torch.testing.assert_close(model[0].weights.detach(), expected)
