"""Affect metrics against direct numpy formulas and degenerate inputs."""

import numpy as np
import pytest
import torch

from hoconv.app.affect.metrics import (
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
