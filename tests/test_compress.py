"""Tests of hoconv.compress: budgets, the solver, the latency cache, end to end."""

import pytest
import torch
from torch import nn

from hoconv.compress import LatencyTable, compress_model, parse_budget, solve


def test_parse_budget_and_errors():
    b = parse_budget("params=0.3")
    assert (b.metric, b.fraction) == ("params", 0.3)
    assert parse_budget("latency=0.5").metric == "latency"
    for bad in ("params", "flops=0.3", "params=abc", "params=0", "macs=1.5"):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad)


def test_solver_meets_budget_and_keeps_dense_when_it_does_not_pay():
    table = {
        "a": [{"cost": 50, "error": 0.1}, {"cost": 20, "error": 0.3}],
        "b": [{"cost": 120, "error": 0.01}],  # costs more than dense: never taken
    }
    dense = {"a": 100, "b": 100}
    choice = solve(table, dense, fixed_cost=0, target=150)
    assert choice["b"] is None and choice["a"]["cost"] == 50
    choice = solve(table, dense, fixed_cost=0, target=120)
    assert choice["a"]["cost"] == 20 and choice["b"] is None
    with pytest.raises(ValueError, match="cannot be met"):
        solve(table, dense, fixed_cost=0, target=110)


def test_latency_table_caches(tmp_path):
    path = tmp_path / "lat.json"
    conv = nn.Conv2d(4, 4, 3)
    t1 = LatencyTable(path, repeats=2)
    ms = t1.forward_ms("k", conv, (1, 4, 8, 8))
    assert t1.measured == 1 and ms > 0
    t2 = LatencyTable(path, repeats=2)
    assert t2.forward_ms("k", conv, (1, 4, 8, 8)) == ms and t2.measured == 0


def test_compress_model_meets_params_budget():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3))
    x = torch.randn(1, 8, 8, 8)
    new, spec, report = compress_model(model, x, parse_budget("params=0.6"), kind="tucker")
    assert spec and report.params_after <= 0.6 * report.params_before
    assert sum(p.numel() for p in new.parameters()) == report.params_after
    assert new(x).shape == model(x).shape


def test_compress_checkpoint_cli_reloads(tmp_path, capsys):
    from hoconv.cli import main
    from hoconv.engine import checkpoint as ck
    from tests import standins

    standins.install()
    torch.manual_seed(0)
    model = standins.TinyNet(dim=2, num_outputs=2)
    spec = {"name": "test_tiny2d", "kwargs": {"num_outputs": 2}, "transductions": []}
    src = ck.write_checkpoint(
        tmp_path / "a.pt",
        ck.make_checkpoint(model_spec=spec, state_dict=model.state_dict(), epoch=1, config={}),
    )
    out = tmp_path / "b.pt"
    argv = ["compress", "--checkpoint", str(src), "--out", str(out), "--budget", "params=0.9",
            "--kind", "tucker", "--input-shape", "2,3,8,8"]  # fmt: skip
    assert main(argv) == 0
    new, meta = ck.load_model(out)
    assert meta["model"]["factorized"]
    x = torch.randn(2, 3, 8, 8)
    assert new(x).shape == model.eval()(x).shape
    assert sum(p.numel() for p in new.parameters()) <= 0.9 * sum(
        p.numel() for p in model.parameters()
    )
    bad = [a if a != "params=0.9" else "flops=2" for a in argv]
    assert main(bad) == 2
    assert "budget 'flops=2'" in capsys.readouterr().err
