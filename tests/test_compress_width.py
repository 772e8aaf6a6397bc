"""Block-width candidates of `hoconv compress`: narrower inverted-residual blocks (their CP rank)."""

import re

import pytest
import torch
from torch import nn

from hoconv.compress import LatencyTable, apply_choices, compress_model, parse_budget
from hoconv.compress import width as W
from hoconv.models.mobilenet import InvertedResidual, depthwise_3x3, depthwise_cp

DEPTHWISE = {"3x3": depthwise_3x3, "cp": depthwise_cp}


def _block(dw: str = "3x3", stride: int = 1, in_planes: int = 8, out_planes: int = 16):
    """An inverted-residual block (expansion 6) with non-trivial norm statistics, eval mode."""
    torch.manual_seed(0)
    block = InvertedResidual(in_planes, out_planes, 6, stride, DEPTHWISE[dw])
    for bn in (m for m in block.modules() if isinstance(m, nn.BatchNorm2d)):
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return block.eval()


def _info(block, x):
    (info,) = W.record_blocks(nn.Sequential(block), x)
    return info


@pytest.mark.parametrize("dw", DEPTHWISE)
@pytest.mark.parametrize("stride", [1, 2])
def test_full_width_is_the_dense_block(dw, stride):
    block, x = _block(dw, stride), torch.randn(2, 8, 8, 8)
    full = W.narrow(block, torch.arange(48))
    with torch.no_grad():
        assert torch.equal(full(x), block(x))


@pytest.mark.parametrize("dw", DEPTHWISE)
@pytest.mark.parametrize("stride", [1, 2])
def test_narrow_block_equals_masking_the_dropped_channels(dw, stride):
    """Oracle: the dense block with the dropped channels' BN2 output set to zero."""
    block, x = _block(dw, stride), torch.randn(2, 8, 8, 8)
    keep = torch.randperm(48)[:20]
    dropped = torch.ones(48, dtype=torch.bool)
    dropped[keep] = False

    def zero_dropped(module, args, out):
        return out.masked_fill(dropped.view(1, -1, 1, 1), 0.0)

    handle = block.block[4].register_forward_hook(zero_dropped)
    with torch.no_grad():
        masked = block(x)
    handle.remove()
    narrow = W.narrow(block, keep)
    assert narrow.block[0].out_channels == 20 and narrow.block[-2].in_channels == 20
    with torch.no_grad():
        assert torch.allclose(narrow(x), masked, atol=1e-5)
        assert not torch.allclose(block(x), masked, atol=1e-3)  # the mask does change the block


@pytest.mark.parametrize("dw, dw_params, dw_macs", [("3x3", 9, 9), ("cp", 3 + 2 + 3, 3 + 3)])
def test_params_and_macs_by_hand(dw, dw_params, dw_macs):
    x = torch.randn(2, 8, 8, 8)  # in 8 -> out 16, stride 1: a 1x1 conv + BN shortcut
    info = _info(_block(dw), x)

    def by_hand(k):
        params = 8 * k + 2 * k + dw_params * k + 2 * k + k * 16 + 2 * 16 + 8 * 16 + 2 * 16
        macs = 2 * 64 * (8 * k + dw_macs * k + k * 16 + 8 * 16)  # N x HW x per-position
        return params, macs

    assert (info.params, info.macs) == by_hand(48)
    cands = W.block_candidates(info, fractions=(16 / 48, 24 / 48))
    assert [(c.kind, c.rank) for c in cands] == [("width", 16), ("width", 24)]
    assert [(c.params, c.macs) for c in cands] == [by_hand(16), by_hand(24)]
    assert 0 < cands[1].error < cands[0].error < 1 and cands[0].fraction == 16 / 48


def test_importance_drops_dead_channels_first():
    block, x = _block(), torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        block.block[-2].weight[:, 16:] = 0  # hidden channels 16.. reach nothing
    info = _info(block, x)
    (cand,) = W.block_candidates(info, fractions=(16 / 48,))
    assert cand.error == pytest.approx(0.0, abs=1e-6)  # only channels that reach nothing dropped
    assert W.output_error(info, W.narrow(block, torch.arange(32, 48))) > 0.1  # the wrong 16


def test_width_ranks_round_to_multiples_of_8():
    assert W.width_ranks(48) == [16, 24, 32]
    assert W.width_ranks(480) == [120, 176, 240, 304, 360]
    assert W.width_ranks(12) == [8] and W.width_ranks(8) == []


def test_bad_widths_are_refused():
    block = _block()
    for keep in ([], [0, 0], [48], [-1]):
        with pytest.raises(ValueError, match="distinct indices"):
            W.narrow(block, keep)
    with pytest.raises(ValueError, match="outside"):
        W.narrowed_empty(block, 49)
    model = nn.Sequential(block, nn.Conv2d(16, 4, 3))
    with pytest.raises(ValueError, match="not an inverted-residual block"):
        apply_choices(model, {"1": {"kind": "width", "rank": 8}})


def _mobilenet(name: str = "mobilenet_v2_cifar"):
    from hoconv.models import create_model

    torch.manual_seed(0)
    return create_model(name, width=25, num_outputs=10).eval()


def _compress(model, x, budget="params=0.5", **kwargs):
    return compress_model(model, x, parse_budget(budget), kind="tucker",
                          latency=LatencyTable("/dev/null", repeats=1), timing_repeats=2,
                          **{"block_width": True, **kwargs})  # fmt: skip


def test_no_conv_is_both_narrowed_and_factorized():
    model, x = _mobilenet(), torch.randn(2, 3, 8, 8)
    new, spec, report = _compress(model, x, pointwise=True)
    blocks = [n for n, m in model.named_modules() if W.is_width_block(m)]
    widths = [n for n, c in spec.items() if c["kind"] == "width"]
    assert widths and set(widths) <= set(blocks)
    rows = [r["name"] for r in report.rows]
    assert not [r for r in rows if r.startswith(tuple(f"{b}.block." for b in blocks))]
    assert any(".shortcut." in r for r in rows)  # shortcut 1x1 convs are still offered
    assert report.whole["compressed"]["params"] <= 0.5 * report.whole["original"]["params"]
    assert sum(p.numel() for p in new.parameters()) == report.whole["compressed"]["params"]
    _, spec, report = _compress(model, x, pointwise=True, block_width=False)  # the default
    assert {c["kind"] for c in spec.values()} == {"tucker"}
    assert any(r["name"].endswith(".block.0") for r in report.rows)  # expand convs offered


@pytest.mark.parametrize("name", ["mobilenet_v2_cifar", "cp_mobilenet_v2_cifar"])
def test_width_checkpoint_round_trips_through_load_model(tmp_path, name):
    from hoconv.app.engine import checkpoint as ck

    model, x = _mobilenet(name), torch.randn(2, 3, 8, 8)
    assert len(W.record_blocks(model, x)) == 16  # every block but the first (expansion 1)
    new, spec, _ = _compress(model, x)
    assert any(c["kind"] == "width" for c in spec.values())
    kwargs = {"width": 25, "num_outputs": 10}
    ckpt = ck.make_checkpoint(model_spec={"name": name, "kwargs": kwargs},
                              state_dict=new.state_dict(), epoch=1, config={})  # fmt: skip
    ckpt["model"]["factorized"] = spec
    ckpt["digest"] = ck.digest(ckpt)
    loaded, _ = ck.load_model(ck.write_checkpoint(tmp_path / "w.pt", ckpt))
    with torch.no_grad():
        assert torch.equal(loaded(x), new(x))


def test_cli_block_width_end_to_end(tmp_path, monkeypatch):
    from hoconv.app.cli import main
    from hoconv.app.engine import checkpoint as ck
    from hoconv.app.export import export_checkpoint
    from tests import standins

    monkeypatch.setenv("HOCONV_CACHE", str(tmp_path / "cache"))
    model, src = standins.tiny_checkpoint(tmp_path / "a.pt", {}, "mobilenet_v2_cifar",
                                          width=25, num_outputs=10)  # fmt: skip
    out, rep = tmp_path / "b.pt", tmp_path / "rep"
    argv = ["compress", "--checkpoint", str(src), "--out", str(out), "--budget", "params=0.6",
            "--kind", "tucker", "--input-shape", "2,3,8,8", "--report-dir", str(rep),
            "--block-width"]  # fmt: skip
    assert main(argv) == 0
    new, meta = ck.load_model(out)
    widths = {n: c["rank"] for n, c in meta["model"]["factorized"].items() if c["kind"] == "width"}
    assert widths and all(isinstance(new.get_submodule(n), InvertedResidual) for n in widths)
    assert {n: W.hidden_width(new.get_submodule(n)) for n in widths} == widths
    x = torch.randn(2, 3, 8, 8)
    assert new(x).shape == model.eval()(x).shape
    table = (rep / "compress.md").read_text()
    assert re.search(r"\| width \| \d+ of \d+ \|", table)
    info = export_checkpoint((new, meta), tmp_path / "m.ts", "torchscript", image_size=8)
    assert info["max_abs_difference"] < 1e-4


def test_report_shows_a_block_rank_as_k_of_r():
    from hoconv.app.compress.report import rank_text

    assert rank_text({"kind": "width", "rank": 24, "of": 96}) == "24 of 96"
    assert rank_text({"kind": "dense", "rank": "-", "of": 96}) == "- of 96"
    assert rank_text({"kind": "tucker", "rank": (4, 6)}) == "(4, 6)"
