"""AffectLoss: the paper's formula, shake-shake weights, masks, CE, stability, gradcheck."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hoconv.app.affect.losses import AffectLoss
from hoconv.app.affect.metrics import ccc, pcc, rmse


def _batch(n=16, seed=0, t=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if t is None else (n, t)
    return {
        "valence": torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1,
        "arousal": torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1,
        "expression": torch.randint(-1, 8, shape, generator=g),
    }, torch.randn((*shape, 10), generator=g, dtype=torch.float64)


def test_fixed_weights_match_the_paper_formula():
    batch, pred = _batch()
    y = [batch["valence"].numpy(), batch["arousal"].numpy()]
    p = [pred[:, 0].numpy(), pred[:, 1].numpy()]
    l_rmse = rmse(y[0], p[0]) + rmse(y[1], p[1])
    l_pcc = 1 - (pcc(y[0], p[0]) + pcc(y[1], p[1])) / 2
    l_ccc = 1 - (ccc(y[0], p[0]) + ccc(y[1], p[1])) / 2
    w = (0.2, 0.3, 0.5)
    loss = AffectLoss(weights=w, expression_weight=0.0, eps=1e-300)
    expected = (w[0] * l_rmse + w[1] * l_pcc + w[2] * l_ccc) / sum(w)
    assert float(loss(pred, batch)) == pytest.approx(expected, abs=1e-10)
    with_ce = AffectLoss(weights=w, expression_weight=1.0, eps=1e-300)(pred, batch)
    ce = F.cross_entropy(pred[:, 2:], batch["expression"], ignore_index=-1)
    assert float(with_ce) == pytest.approx(expected + float(ce), abs=1e-10)


def test_shake_weights_are_random_but_reproducible_and_fixed_in_eval():
    batch, pred = _batch()
    a = AffectLoss(generator=torch.Generator().manual_seed(5))
    b = AffectLoss(generator=torch.Generator().manual_seed(5))
    la = [float(a(pred, batch)) for _ in range(4)]
    assert la == [float(b(pred, batch)) for _ in range(4)]
    assert len(set(la)) == 4  # a new draw per call
    _, terms = a(pred, batch, return_terms=True)
    lo, hi = (
        min(terms["rmse"], terms["pcc"], terms["ccc"]),
        max(terms["rmse"], terms["pcc"], terms["ccc"]),
    )
    assert all(lo + terms["ce"] - 1e-9 <= v <= hi + terms["ce"] + 1e-9 for v in la)  # convex mix
    a.eval()
    equal = AffectLoss(weights=(1, 1, 1))(pred, batch)
    assert (
        float(a(pred, batch)) == pytest.approx(float(equal)) == pytest.approx(float(a(pred, batch)))
    )


def test_mask_selects_frames():
    batch, pred = _batch(n=3, t=5)
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(1)) < 0.6
    loss = AffectLoss(weights=(1, 2, 3))
    masked = loss(pred, {**batch, "mask": mask})
    flat = {k: v[mask] for k, v in batch.items()}
    assert float(masked) == pytest.approx(float(loss(pred[mask], flat)), abs=1e-12)
    # changing masked-out targets changes nothing
    other = {
        **batch,
        "valence": torch.where(mask, batch["valence"], torch.full_like(batch["valence"], 9.0)),
    }
    assert float(loss(pred, {**other, "mask": mask})) == pytest.approx(float(masked), abs=1e-12)
    empty = loss(pred, {**batch, "mask": torch.zeros(3, 5, dtype=torch.bool)})
    assert float(empty) == 0.0 and empty.requires_grad is pred.requires_grad


def test_zero_variance_batch_is_finite():
    pred = torch.zeros(8, 2, dtype=torch.float64, requires_grad=True)  # constant predictions
    batch = {
        "valence": torch.full((8,), 0.3, dtype=torch.float64),
        "arousal": torch.zeros(8, dtype=torch.float64),
    }
    loss = AffectLoss(weights=(1, 1, 1))(pred, batch)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_all_missing_expression_skips_ce():
    batch, pred = _batch()
    batch["expression"] = torch.full_like(batch["expression"], -1)
    loss = AffectLoss(weights=(1, 1, 1))
    no_ce = AffectLoss(weights=(1, 1, 1), expression_weight=0.0)
    assert float(loss(pred, batch)) == pytest.approx(float(no_ce(pred, batch)))


def test_gradcheck_float64():
    batch, pred = _batch(n=4, t=2)
    pred = pred[..., :5].clone().requires_grad_(True)  # (4, 2, 2 + 3 logits)
    batch["expression"] = batch["expression"].clamp(max=2)
    batch["mask"] = torch.tensor([[True, False], [True, True], [False, True], [True, True]])
    loss = AffectLoss(weights=(0.3, 0.5, 0.9))
    assert torch.autograd.gradcheck(lambda p: loss(p, batch), (pred,), eps=1e-6, atol=1e-7)


def test_bad_arguments():
    with pytest.raises(ValueError, match="weights"):
        AffectLoss(weights="fixed")
    with pytest.raises(ValueError, match="fixed weights"):
        AffectLoss(weights=(1, -1, 0))
    with pytest.raises(ValueError, match="prediction"):
        AffectLoss()(torch.zeros(4, 1), {"valence": torch.zeros(4), "arousal": torch.zeros(4)})
    assert np.isfinite(
        float(
            AffectLoss()(torch.zeros(1, 2), {"valence": torch.zeros(1), "arousal": torch.ones(1)})
        )
    )
