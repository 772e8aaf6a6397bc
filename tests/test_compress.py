"""Tests of hoconv.compress and hoconv.app.compress: budgets, the solver, caches, MACs, distillation, end to end."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hoconv.app.compress import DistillSettings, distillation_loss
from hoconv.compress import (
    ErrorCache,
    LatencyTable,
    compress_model,
    interleaved_ms,
    layer_candidates,
    model_macs,
    parse_budget,
    record_shapes,
    solve,
)
from hoconv.compress.candidates import Candidate, refine_fractions
from hoconv.layers import CPConv


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3))


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


def test_model_macs_counts_convs_linears_and_factorized_layers_once():
    conv, grouped = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=4)
    cp = CPConv(8, 6, 3, dim=2, rank=5, padding=1, norm=True, activation="relu")
    model = nn.Sequential(conv, grouped, cp, nn.Flatten(), nn.Linear(6 * 5 * 5, 7))
    x = torch.randn(2, 3, 5, 5)
    expected = 2 * 8 * 25 * 3 * 9 + 2 * 8 * 25 * 2 * 9 + cp.macs((2, 8, 5, 5)) + 2 * 7 * 150
    assert model_macs(model, x) == expected


def test_error_cache_and_candidates(tmp_path):
    info = record_shapes(_net(), torch.randn(1, 8, 8, 8))[1]
    cache = ErrorCache(tmp_path / "err.json")
    cands = layer_candidates(info, ("cp", "tucker"), (0.2, 0.5), errors=cache)
    assert {c.kind for c in cands} == {"cp", "tucker"} and cache.computed == len(cands)
    assert all(0 <= c.error < 1 and c.params < info.params for c in cands)
    cache.save()
    again = ErrorCache(tmp_path / "err.json")
    assert [
        c.error for c in layer_candidates(info, ("cp", "tucker"), (0.2, 0.5), errors=again)
    ] == [c.error for c in cands]
    assert again.computed == 0


def test_refine_fractions_brackets_the_pick():
    grid = (0.1, 0.25, 0.5)
    low, high = refine_fractions(Candidate("cp", 4, 0.1, 1, 1, fraction=0.25), grid)
    assert 0.1 < low < 0.25 < high < 0.5
    assert refine_fractions(None, grid)[0] > 0.5


def test_compress_model_meets_params_budget():
    model, x = _net(), torch.randn(1, 8, 8, 8)
    new, spec, report = compress_model(model, x, parse_budget("params=0.6"), kind="tucker",
                                       latency=LatencyTable("/dev/null", repeats=1),
                                       timing_repeats=2)  # fmt: skip
    w = report.whole
    assert spec and w["compressed"]["params"] <= 0.6 * w["original"]["params"]
    assert sum(p.numel() for p in new.parameters()) == w["compressed"]["params"]
    assert new(x).shape == model(x).shape
    assert all(r["ms"] > 0 for r in report.rows) and w["compressed"]["ms"] > 0


def test_built_layers_are_the_candidates_own_decompositions(tmp_path, monkeypatch):
    """The model is built from the search's layers: no decomposition runs twice, and every
    chosen layer's error is the candidate error the solver saw."""
    from hoconv.compress import candidates as C

    calls = []
    real = C.decompose
    monkeypatch.setattr(C, "decompose", lambda *a: calls.append(a[0]) or real(*a))
    model, x = _net(), torch.randn(1, 8, 8, 8)
    errors, lines = ErrorCache(tmp_path / "e.json"), []
    new, spec, report = compress_model(model, x, parse_budget("params=0.6"), kind="auto",
                                       latency=LatencyTable("/dev/null", repeats=1),
                                       errors=errors, timing_repeats=2,
                                       progress=lines.append)  # fmt: skip
    assert spec and len(calls) == errors.computed == len(errors.layers)
    for row in report.rows:
        if row["kind"] != "dense":
            assert row["error"] == errors.error(model.get_submodule(row["name"]), row["kind"],
                                                spec[row["name"]]["rank"]
                                                if row["kind"] == "cp"
                                                else tuple(spec[row["name"]]["rank"]))  # fmt: skip
    assert lines[0].startswith("candidates 1/2 0:") and any("search done" in ln for ln in lines)


def test_macs_budget_is_of_the_whole_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 32, 3, padding=1), nn.Flatten(), nn.Linear(32 * 64, 64))
    x = torch.randn(1, 8, 8, 8)
    whole = model_macs(model, x)
    linear = 64 * 32 * 64
    _, _, report = compress_model(model, x, parse_budget("macs=0.6"), kind="tucker",
                                  latency=LatencyTable("/dev/null", repeats=1), timing_repeats=2)  # fmt: skip
    assert report.whole["original"]["macs"] == whole
    assert report.whole["compressed"]["macs"] <= 0.6 * whole
    conv_after = report.rows[0]["macs"]
    assert report.whole["compressed"]["macs"] == conv_after + linear  # the head counts too


def test_distillation_loss_against_hand_formulas():
    torch.manual_seed(0)
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    st = DistillSettings(temperature=2.0, kl_weight=0.5, mse_weight=3.0)
    p_t = F.softmax(t / 2, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / 2, 1))).sum(1).mean() * 4
    assert torch.allclose(distillation_loss("classify", s, t, st), 0.5 * kl)
    pt3 = F.softmax(t[:, 2:] / 2, 1)
    kl3 = (pt3 * (pt3.log() - F.log_softmax(s[:, 2:] / 2, 1))).sum(1).mean() * 4
    mse = ((s[:, :2] - t[:, :2]) ** 2).mean()
    assert torch.allclose(distillation_loss("affect", s, t, st), 3.0 * mse + 0.5 * kl3)
    assert float(distillation_loss("affect", t, t, st)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        DistillSettings(temperature=0)


def test_interleaved_ms_times_every_model():
    ms = interleaved_ms({"a": nn.Conv2d(3, 4, 3), "b": nn.Identity()}, torch.randn(1, 3, 8, 8), 3)
    assert set(ms) == {"a", "b"} and min(ms.values()) > 0


def _tiny_checkpoint(tmp_path, config):
    from tests import standins

    return standins.tiny_checkpoint(tmp_path / "a.pt", config, num_outputs=10, width=8)


def test_compress_checkpoint_cli_reloads(tmp_path, capsys):
    from hoconv.app.cli import main
    from hoconv.app.engine import checkpoint as ck

    model, src = _tiny_checkpoint(tmp_path, {})
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
    assert main([*argv[:-2], "--input-shape", "2,3,8,8", "--finetune-epochs", "1"]) == 2
    assert "needs data" in capsys.readouterr().err


def test_compress_with_distillation_finetune_and_report(tmp_path, capsys):
    from hoconv.app.cli import main
    from hoconv.app.engine import checkpoint as ck

    data = {"data": "test_tiny", "mode": "static", "task": "affect", "batch_size": 8,
            "workers": 0, "data_kwargs": {"size": 16, "image_size": 16}}  # fmt: skip
    _, src = _tiny_checkpoint(tmp_path, data)
    out, rep = tmp_path / "b.pt", tmp_path / "rep"
    argv = ["compress", "--checkpoint", str(src), "--out", str(out), "--budget", "params=0.95",
            "--kind", "cp", "--input-shape", "2,3,16,16", "--finetune-epochs", "2",
            "--report-dir", str(rep)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "fine-tune: epoch 0" in text and "| finetuned |" in text
    report = json.loads((rep / "compress.json").read_text())
    scores = {k: v["score"] for k, v in report["whole"].items()}
    assert set(scores) == {"original", "compressed", "finetuned"}
    assert all(-1 <= s <= 1 for s in scores.values())
    assert (rep / "compress_layers.png").stat().st_size > 1000
    new, _ = ck.load_model(out)
    assert isinstance(new.conv, CPConv)


def test_evbmf_recovers_planted_rank_and_noise():
    import numpy as np

    from hoconv.compress.evbmf import evbmf_rank, tucker_ranks_evbmf

    rng = np.random.default_rng(0)
    for rank in (3, 10):
        signal = 0.5 * rng.normal(size=(60, rank)) @ rng.normal(size=(rank, 200))
        found, sigma2 = evbmf_rank(signal + rng.normal(size=(60, 200)))
        assert found == rank and sigma2 == pytest.approx(1.0, rel=0.05)
    assert evbmf_rank(rng.normal(size=(50, 80)))[0] == 0  # pure noise: nothing kept
    kernel = torch.einsum("tr,rc,k->tck", torch.randn(16, 4), torch.randn(4, 12), torch.randn(9))
    kernel = (kernel + 0.01 * torch.randn(16, 12, 9)).reshape(16, 12, 3, 3)
    assert tucker_ranks_evbmf(kernel) == (4, 4)


NOT_MET = (
    r"budget not met: measured \d+\.\d\dx of the original \(target 0\.01\), cheapest choice kept"
)


def test_params_budget_below_reach_names_the_minimum():
    # 0.01 of the parameters: below even the smallest Tucker ranks of both convs
    with pytest.raises(ValueError, match=r"reachable minimum") as info:
        compress_model(_net(), torch.randn(1, 8, 8, 8), parse_budget("params=0.01"),
                       kind="tucker", latency=LatencyTable("/dev/null", repeats=1),
                       timing_repeats=2)  # fmt: skip
    floor = float(str(info.value).split("give ")[1].split("x")[0])
    assert 0.01 < floor < 1  # the minimum it names is a real fraction above the budget


def test_latency_budget_out_of_reach_keeps_the_cheapest_choice():
    from hoconv.compress import BudgetNotMet, BudgetWarning

    model, x = _net(), torch.randn(2, 8, 16, 16)
    args = dict(kind="tucker", latency=LatencyTable("/dev/null", repeats=1), timing_repeats=3)
    with pytest.raises(BudgetNotMet, match=NOT_MET) as info:  # 100x faster: out of reach
        compress_model(model, x, parse_budget("latency=0.01"), **args)
    err = info.value
    assert not err.report.budget_met and err.report.rounds[-1]["note"]
    assert len(err.report.rounds) == 1  # no re-solve once the cheapest choice is over the target
    assert err.model(x).shape == model(x).shape
    with pytest.warns(BudgetWarning, match=NOT_MET):
        new, spec, report = compress_model(model, x, parse_budget("latency=0.01"),
                                           best_effort=True, **args)  # fmt: skip
    ratio = report.whole["compressed"]["ms"] / report.whole["original"]["ms"]
    assert f"measured {ratio:.2f}x" in report.note and not report.budget_met  # the json's ratio
    assert new(x).shape == model(x).shape


def test_compress_cli_latency_out_of_reach_exits_2_unless_best_effort(tmp_path, capsys):
    from hoconv.app.cli import main

    _, src = _tiny_checkpoint(tmp_path, {})
    out, rep = tmp_path / "b.pt", tmp_path / "rep"
    argv = ["compress", "--checkpoint", str(src), "--out", str(out), "--budget", "latency=0.01",
            "--kind", "tucker", "--input-shape", "2,3,16,16", "--report-dir", str(rep)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("budget not met") == 1 and "hoconv compress: error: budget not met" in err
    assert not out.exists()  # without --best-effort nothing is written, but the report is
    saved = json.loads((rep / "compress.json").read_text())
    assert saved["budget_met"] is False and "cheapest choice kept" in saved["note"]
    assert main([*argv, "--best-effort"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("budget not met") == 1 and "warning: budget not met" in captured.err
    assert out.exists() and "**budget not met" in (rep / "compress.md").read_text()


def test_library_compress_does_not_import_the_application():
    import subprocess
    import sys

    code = (
        "import sys, hoconv.compress\n"
        "print(sorted(m for m in sys.modules if m.startswith('hoconv.app')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_not_met_note_names_the_conv_share_when_it_bounds_the_budget():
    from hoconv.compress.verdict import CompressReport, conv_share_hint

    report = CompressReport(parse_budget("latency=0.5"))
    report.whole["original"] = {"ms": 8.0}
    report.rows = [{"dense_ms": 2.0}, {"dense_ms": 1.6}]  # convs 45 % of the forward
    hint = conv_share_hint(report)
    assert "45% of the original's forward" in hint and "~0.55x" in hint
    report.rows = [{"dense_ms": 3.0}, {"dense_ms": 2.0}]  # 62 %: removing them would reach 0.38x
    assert conv_share_hint(report) == ""
    report.in_model_share = 0.3  # measured in the model: it wins over the table's timings
    assert "30% of the original's forward (measured in the model)" in conv_share_hint(report)


def test_latency_whole_is_the_table_sum_over_the_measured_in_model_share():
    """The solver's units: table ms for the layers, the rest scaled by the in-model share."""
    from hoconv.compress import candidates as C
    from hoconv.compress.apply import _latency_whole
    from hoconv.compress.verdict import CompressReport

    class Table:  # every layer "costs" 5 ms on its own, whatever it costs in the model
        def forward_ms(self, key, layer, shape):
            return 5.0

    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3)).eval()
    sample = torch.randn(2, 3, 24, 24)
    infos = C.record_shapes(model, sample)
    report = CompressReport(parse_budget("latency=0.5"))
    whole = _latency_whole(model, sample, infos, Table(), report, repeats=5)
    assert 0.0 <= report.in_model_share <= 1.0
    if report.in_model_share >= 0.02:
        assert whole == pytest.approx(10.0 / report.in_model_share)
    else:
        assert whole >= 10.0
