"""``--lasso auto``: the schedule's rule, and the CLI run that records it in config.yaml."""

from __future__ import annotations

import pytest
import standins
import torch
import yaml
from torch import nn

from hoconv import pruning as P
from hoconv.app.cli import main
from hoconv.lasso_schedule import AutoLasso
from hoconv.layers import CPConv

DT = torch.float64


def test_auto_lasso_ramps_to_the_target_then_holds_the_zeros():
    torch.manual_seed(0)
    model = nn.Sequential(CPConv(3, 4, 3, dim=2, rank=10, padding=1, dtype=DT))
    x, target = torch.randn(8, 3, 6, 6, dtype=DT), torch.randn(8, 4, 6, 6, dtype=DT)
    P.normalize_factors(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    schedule = AutoLasso(target=0.3, start=1e-4, doubling_steps=2)
    gammas = []
    for _ in range(200):
        opt.zero_grad()
        (model(x) - target).square().mean().backward()
        opt.step()
        schedule.after_step(model, opt)
        gammas.append(schedule.gamma)
        if schedule.phase == "hold":
            break
    assert schedule.phase == "hold" and schedule.stopped_by == "target"
    assert schedule.zero_share >= 0.3 and gammas[0] == 1e-4 and gammas[-1] > 1e-4
    held = (model[0].weights == 0).clone()
    for _ in range(5):  # the penalty is off, the zeros stay
        opt.zero_grad()
        (model(x) - target).square().mean().backward()
        opt.step()
        schedule.after_step(model, opt)
    assert torch.equal(model[0].weights == 0, held) and schedule.gamma == gammas[-1]


def test_auto_lasso_delay_trains_without_the_penalty_then_ramps():
    torch.manual_seed(0)
    model = nn.Sequential(CPConv(3, 4, 3, dim=2, rank=6, padding=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # no grads: only the proximal step moves
    before = model[0].weights.detach().clone()
    schedule = AutoLasso(start=0.05, delay_epochs=2)
    for epoch in range(2):
        schedule.after_step(model, opt)
        schedule.end_epoch(model, 0.5 - 0.1 * epoch)  # a drop in the delay does not stop it
    assert torch.equal(model[0].weights, before) and schedule.steps == 0
    assert schedule.phase == "ramp"
    schedule.after_step(model, opt)  # the third epoch: the ramp has started
    assert schedule.steps == 1 and not torch.equal(model[0].weights, before)
    assert AutoLasso(**schedule.state()).epochs_seen == 2  # resumable
    with pytest.raises(ValueError, match="lasso_delay"):
        AutoLasso(delay_epochs=-1)


def test_auto_lasso_stops_the_ramp_when_the_score_drops_and_checks_its_settings():
    model = nn.Sequential(CPConv(3, 4, 3, dim=2, rank=4))
    schedule = AutoLasso(tolerance=0.02)
    schedule.end_epoch(model, 0.50)
    schedule.end_epoch(model, 0.49)  # within the tolerance
    assert schedule.phase == "ramp"
    schedule.end_epoch(model, 0.47)
    assert schedule.phase == "hold" and schedule.stopped_by == "tolerance"
    resumed = AutoLasso(**schedule.state())
    assert resumed.phase == "hold"  # resumable from its state, once it knows the zeros
    with torch.no_grad():
        model[0].weights[1] = 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="resume"):
        resumed.after_step(model, opt)
    resumed.resume(model)
    model[0].weights.grad = torch.ones(4)
    opt.step()
    resumed.after_step(model, opt)
    assert (model[0].weights == 0).tolist() == [False, True, False, False]
    for bad in ({"target": 1.0}, {"tolerance": -1}, {"start": 0.0}, {"doubling_steps": 0}):
        with pytest.raises(ValueError, match="lasso_"):
            AutoLasso(**bad)


def test_cli_lasso_auto_records_its_schedule_in_config_yaml(tmp_path, capsys):
    standins.install()
    run = tmp_path / "auto"
    args = ["train", "--data", "test_tiny", "--model", "test_tiny_cp", "--batch-size", "8",
            "--workers", "0", "--device", "cpu", "--no-progress", "--data-arg", "size=16",
            "--epochs", "4", "--lr", "0.01", "--lasso", "auto", "--lasso-target", "0.25",
            "--seed", "1", "--out", str(run)]  # fmt: skip
    assert main([*args, "--config", str(_config(tmp_path))]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["lasso"] == "auto" and cfg["lasso_target"] == 0.25
    state = cfg["lasso_auto"]
    assert state["steps"] > 0 and state["gamma"] >= state["start"]
    assert state["phase"] == "hold" and state["zero_share"] >= 0.25  # doubling each step
    assert "lasso_gamma" in (run / "log.csv").read_text().splitlines()[0]
    assert (
        main(["prune", "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "p.pt")]) == 0
    )
    assert "nothing pruned" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # argparse's one-line usage error
        main([*args[:-1], str(tmp_path / "bad"), "--lasso", "often"])
    assert exit_info.value.code == 2
    assert "'often'" in capsys.readouterr().err


def _config(tmp_path, start: float = 1.0):
    path = tmp_path / "fast_ramp.yaml"
    path.write_text(f"lasso_start: {start}\nlasso_doubling_steps: 1\n")
    return path


def test_cli_lasso_auto_resumes_where_it_was(tmp_path):
    standins.install()
    base = ["train", "--data", "test_tiny", "--model", "test_tiny_cp", "--batch-size", "8",
            "--workers", "0", "--device", "cpu", "--no-progress", "--data-arg", "size=16",
            "--lr", "0.01", "--lasso", "auto", "--seed", "1",
            "--config", str(_config(tmp_path, start=0.5))]  # fmt: skip
    assert main([*base, "--epochs", "3", "--out", str(tmp_path / "whole")]) == 0
    assert main([*base, "--epochs", "1", "--out", str(tmp_path / "cut")]) == 0
    assert main([*base, "--epochs", "3", "--resume", "--out", str(tmp_path / "cut")]) == 0
    states = [_last(tmp_path / run) for run in ("whole", "cut")]
    assert states[0]["config"]["lasso_auto"] == states[1]["config"]["lasso_auto"]
    assert states[0]["config"]["lasso_auto"]["phase"] == "hold"  # resumed while holding zeros
    for key, value in states[0]["state_dict"].items():
        torch.testing.assert_close(states[1]["state_dict"][key], value, rtol=0, atol=0)


def _last(run):
    from hoconv.app.engine import read_checkpoint

    return read_checkpoint(run / "last.pt")
