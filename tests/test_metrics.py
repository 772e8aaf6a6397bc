"""Affect metrics against direct numpy formulas, degenerate inputs, the DDP accumulator."""

import os
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hoconv.affect.metrics import (
    AffectAccumulator,
    DegenerateMetricWarning,
    accuracy,
    ccc,
    pcc,
    regression_report,
    rmse,
    sagr,
)


def _ref(y, p):
    """Direct population-moment formulas (audmetric.concordance_cc definition for ccc)."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    mu_y, mu_p = y.mean(), p.mean()
    var_y, var_p = ((y - mu_y) ** 2).mean(), ((p - mu_p) ** 2).mean()
    cov = ((y - mu_y) * (p - mu_p)).mean()
    return {
        "rmse": np.sqrt(((y - p) ** 2).mean()),
        "sagr": np.mean(np.sign(y) == np.sign(p)),
        "pcc": cov / np.sqrt(var_y * var_p),
        "ccc": 2 * cov / (var_y + var_p + (mu_y - mu_p) ** 2),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_numpy(seed):
    rng = np.random.default_rng(seed)
    y = rng.uniform(-1, 1, 257)
    p = 0.6 * y + rng.normal(0.1, 0.3, 257)
    ref = _ref(y, p)
    for fn in (rmse, sagr, pcc, ccc):
        for a, b in (
            (y, p),
            (torch.from_numpy(y).float(), torch.from_numpy(p).float()),
            (y.tolist(), p.tolist()),
        ):
            tol = 1e-12 if not isinstance(a, torch.Tensor) else 1e-6
            assert fn(a, b) == pytest.approx(ref[fn.__name__], abs=tol)
    assert np.corrcoef(y, p)[0, 1] == pytest.approx(pcc(y, p), abs=1e-12)
    yc = y - y.mean()  # ccc = -1 needs equal means
    assert ccc(y, y) == pytest.approx(1.0, abs=1e-12) and ccc(yc, -yc) == pytest.approx(
        -1.0, abs=1e-12
    )
    assert ccc(y, y + 0.5) < pcc(y, y + 0.5) == pytest.approx(1.0)


def test_degenerate_inputs_warn_not_crash():
    y = np.array([0.1, -0.4, 0.7])
    with pytest.warns(DegenerateMetricWarning):
        assert pcc(y, np.full(3, 0.2)) == 0.0
    with pytest.warns(DegenerateMetricWarning):
        assert ccc(y, np.full(3, 0.2)) == pytest.approx(0.0, abs=1e-15)
    with pytest.warns(DegenerateMetricWarning):
        assert ccc([0.3, 0.3], [0.3, 0.3]) == 1.0
    with pytest.warns(DegenerateMetricWarning):
        assert pcc([0.5], [0.2]) == 0.0
    assert rmse([0.5], [0.2]) == pytest.approx(0.3) and sagr([0.5], [-0.2]) == 0.0
    for fn in (rmse, sagr, pcc, ccc):
        with pytest.warns(DegenerateMetricWarning, match="NaN"):
            assert np.isnan(fn([0.1, np.nan, 0.3], [0.1, 0.2, 0.3]))
        with pytest.warns(DegenerateMetricWarning, match="empty"):
            assert np.isnan(fn([], []))
    with pytest.raises(ValueError, match="sizes differ"):
        rmse([1, 2], [1, 2, 3])


def test_accuracy_ignores_missing():
    target = torch.tensor([0, 1, -1, 2, 2])
    logits = torch.tensor([[3.0, 0, 0], [0, 2, 0], [9, 0, 0], [0, 0, 1], [1, 0, 0]])
    assert accuracy(target, logits) == pytest.approx(3 / 4)
    assert accuracy(target, logits.argmax(1)) == pytest.approx(3 / 4)
    with pytest.warns(DegenerateMetricWarning):
        assert np.isnan(accuracy([-1, -1], [0, 1]))


def test_regression_report_pooled_and_per_sequence():
    rng = np.random.default_rng(3)
    y = rng.uniform(-1, 1, (40, 2))
    p = y + rng.normal(0, 0.2, (40, 2))
    seqs = ["a"] * 10 + ["b"] * 30
    rep = regression_report(y, p, sequences=seqs, per_sequence=True)
    assert set(rep) == {"valence", "arousal"}
    for j, axis in enumerate(("valence", "arousal")):
        ref = _ref(y[:, j], p[:, j])
        for m in ("rmse", "sagr", "pcc", "ccc"):
            assert rep[axis][m] == pytest.approx(ref[m], abs=1e-12)
            per = [_ref(y[:10, j], p[:10, j])[m], _ref(y[10:, j], p[10:, j])[m]]
            assert rep[axis][f"{m}_seq_mean"] == pytest.approx(np.mean(per), abs=1e-12)
        assert rep[axis]["n"] == 40 and rep[axis]["num_sequences"] == 2
    assert "ccc_seq_mean" not in regression_report(y, p)["valence"]
    with pytest.raises(ValueError, match="sequences"):
        regression_report(y, p, per_sequence=True)


def _batches(rng, n_batches):
    for b in range(n_batches):
        pred = torch.from_numpy(rng.normal(0, 0.5, (3, 4, 5)))  # (N, T, 2 + 3 logits)
        yield (
            pred,
            {
                "valence": torch.from_numpy(rng.uniform(-1, 1, (3, 4))).float(),
                "arousal": torch.from_numpy(rng.uniform(-1, 1, (3, 4))).float(),
                "expression": torch.from_numpy(rng.integers(-1, 3, (3, 4))),
                "mask": torch.from_numpy(rng.uniform(size=(3, 4)) < 0.7),
                "video": [f"v{b}_{i}" for i in range(3)],
                "frames": torch.arange(4).repeat(3, 1),
            },
        )


def _expected(batches):
    preds, ys, exprs, logits = [], [], [], []
    for pred, batch in batches:
        m = batch["mask"]
        preds.append(pred[m][:, :2])
        ys.append(torch.stack([batch["valence"][m], batch["arousal"][m]], 1).double())
        exprs.append(batch["expression"][m])
        logits.append(pred[m][:, 2:])
    report = regression_report(torch.cat(ys), torch.cat(preds))
    return report, accuracy(torch.cat(exprs), torch.cat(logits))


def test_accumulator_single_process_masks_and_dedupe():
    batches = list(_batches(np.random.default_rng(0), 3))
    acc = AffectAccumulator()
    for pred, batch in batches:
        acc.update(pred, batch)
    acc.update(*batches[0])  # a duplicate (as DistributedSampler padding would add)
    out = acc.compute()
    report, acc_ref = _expected(batches)
    assert acc.duplicates_removed == int(batches[0][1]["mask"].sum())
    for axis in ("valence", "arousal"):
        for m in ("rmse", "pcc", "ccc", "sagr", "n"):
            assert out[axis][m] == pytest.approx(report[axis][m], abs=1e-12)
    assert out["expression"]["accuracy"] == pytest.approx(acc_ref)


def _ddp_worker(rank, world, init_file, queue):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        batches = list(_batches(np.random.default_rng(0), 4))
        acc = AffectAccumulator()
        for pred, batch in batches[rank::world]:  # each rank sees a different share
            acc.update(pred, batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = acc.compute()
        queue.put((rank, out))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_accumulator_gathers_across_two_gloo_ranks(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init_file = os.path.join(tmp_path, "init")
    mp.spawn(_ddp_worker, args=(2, init_file, queue), nprocs=2, join=True)
    results = dict(queue.get(timeout=30) for _ in range(2))
    report, acc_ref = _expected(list(_batches(np.random.default_rng(0), 4)))
    for rank in (0, 1):
        for axis in ("valence", "arousal"):
            for m in ("rmse", "pcc", "ccc", "sagr", "n"):
                assert results[rank][axis][m] == pytest.approx(report[axis][m], abs=1e-12)
        assert results[rank]["expression"]["accuracy"] == pytest.approx(acc_ref)
