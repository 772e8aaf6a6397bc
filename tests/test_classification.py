"""hoconv.app.classification: loss, gathered top-k accuracy, confusion matrix, conv counts; learning."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from classification_fixtures import coloured_shape, moving_square, write_cifar, write_jester
from torch import nn
from torch.utils.data import DataLoader

from hoconv.app.classification import (
    ClassificationAccumulator,
    classification_loss,
    classification_results,
    confusion_matrix,
    conv_parameter_count,
    main,
    plot_confusion_matrix,
    seed_summary,
)
from hoconv.app.data import create_dataset
from hoconv.layers import CPConv
from hoconv.models import create_model


def test_loss_matches_log_softmax_oracle():
    logits = torch.randn(6, 5, dtype=torch.float64)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    expected = -np.mean(
        [logits[i, labels[i]].item() - np.log(np.exp(logits[i].numpy()).sum()) for i in range(6)]
    )
    assert classification_loss(logits, labels).item() == pytest.approx(expected, rel=1e-12)
    frames = torch.randn(6, 4, 5, dtype=torch.float64)  # per-frame logits: averaged over time
    assert classification_loss(frames, labels).item() == pytest.approx(
        classification_loss(frames.mean(1), labels).item(), rel=1e-12
    )


def test_loss_bad_input():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\]"):
        classification_loss(torch.randn(2, 5), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="3 entries for 2"):
        classification_loss(torch.randn(2, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer class indices"):
        classification_loss(torch.randn(2, 5), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(N, K\) or \(N, T, K\)"):
        classification_loss(torch.randn(5), torch.tensor([0]))


def _oracle(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float, np.ndarray]:
    order = np.argsort(-logits, axis=1, kind="stable")
    top1 = np.mean(order[:, 0] == labels)
    top5 = np.mean([labels[i] in order[i, :5] for i in range(len(labels))])
    cm = np.zeros((logits.shape[1],) * 2, dtype=np.int64)
    for y, p in zip(labels, order[:, 0]):
        cm[y, p] += 1
    return top1, top5, cm


def _batches(seed: int = 0, k: int = 7):
    rng = np.random.default_rng(seed)
    out, start = [], 0
    for n in (5, 3, 8, 4):
        logits = rng.normal(size=(n, k))
        labels = rng.integers(0, k, size=n)
        out.append((logits, labels, np.arange(start, start + n)))
        start += n
    return out


def test_accumulator_matches_oracle_and_drops_duplicates():
    batches = _batches()
    acc = ClassificationAccumulator(7)
    for logits, labels, index in batches:
        acc.update(torch.from_numpy(logits), torch.from_numpy(labels), index)
    acc.update(*(torch.from_numpy(a[:2]) for a in batches[0]))  # DistributedSampler padding
    out = acc.compute()
    top1, top5, cm = _oracle(
        np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    )
    assert out["n"] == 20 and acc.duplicates_removed == 2
    assert out["top1"] == pytest.approx(top1) and out["top5"] == pytest.approx(top5)
    np.testing.assert_array_equal(out["confusion"], cm)
    assert 0 < top1 < top5 < 1  # the fixture exercises both


def test_accumulator_bad_input_and_empty():
    acc = ClassificationAccumulator(3)
    with pytest.raises(ValueError, match="4 classes, expected 3"):
        acc.update(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationAccumulator(1)
    out = acc.compute()
    assert out["n"] == 0 and np.isnan(out["top1"]) and out["confusion"].sum() == 0


def test_confusion_matrix_and_png(tmp_path):
    cm = confusion_matrix([0, 1, 1, 2], [0, 2, 1, 2], 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match="predictions must be in"):
        confusion_matrix([0], [3], 3)
    path = plot_confusion_matrix(cm, tmp_path / "cm.png", ["a", "b", "c"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="2 names for 3 classes"):
        plot_confusion_matrix(cm, tmp_path / "x.png", ["a", "b"])


def test_classification_results_leave_out_unlabelled_and_write_png(tmp_path):
    logits = np.array([[3.0, 1, 0], [0, 2, 1], [1, 0, 2], [0, 1, 3], [5, 0, 0]])
    labels = np.array([0, 2, 2, 1, -1])  # the last one is unlabelled (a test list)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 3))
    out = classification_results(logits, labels, model, ["a", "b", "c"], tmp_path)
    assert (out["n"], out["unlabelled"]) == (4, 1)
    assert out["top1"] == pytest.approx(0.5) and out["top5"] == 1.0
    assert out["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    assert out["conv_params"] == 4 * 3 * 9 + 4
    assert (tmp_path / "confusion_matrix.png").is_file()
    with pytest.raises(ValueError, match=r"logits must be \(M, K\)"):
        classification_results(logits[:3], labels)


def test_conv_parameter_count():
    dense = nn.Sequential(nn.Conv3d(3, 8, 3), nn.BatchNorm3d(8), nn.Flatten(), nn.Linear(8, 2))
    assert conv_parameter_count(dense) == 8 * 3 * 27 + 8
    assert conv_parameter_count(dense, include_bias=False) == 8 * 3 * 27
    rank, c, t = 5, 4, 6
    cp = CPConv(c, t, 3, dim=3, rank=rank, padding=1, norm=True, activation="prelu", skip=True)
    expected = rank * (c + t + 3 * 3) + rank + t + t * c  # factors, weights, bias, skip factor
    assert conv_parameter_count(nn.Sequential(cp, nn.ReLU())) == expected
    assert sum(p.numel() for p in cp.parameters()) > expected  # rank-space BN/PReLU left out


@pytest.mark.parametrize(
    "name, expected",
    [("convnet3d", 2_880_576), ("cp_convnet3d", 1_180_632 + 2_706), ("cp_convnet3d_s", None)],
)
def test_conv_parameter_count_of_the_table7_models(name, expected):
    with torch.device("meta"):
        model = create_model(name, num_classes=27, temporal_output="clip")
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv3d, CPConv))]
    assert len(convs) == 4
    if expected is None:  # HO-CP-S: as HO-CP plus the skip factors U(S) (T x C)
        expected = 1_180_632 + 2_706 + sum(m.out_channels * m.in_channels for m in convs)
    assert conv_parameter_count(model) == expected  # the paper: 2.9M / 1.2M / 1.2M


def test_seed_summary(tmp_path, capsys):
    paths = []
    for i, (a, b) in enumerate([(0.9, 0.99), (0.8, 0.97), (0.7, 0.95)]):
        paths.append(tmp_path / f"m{i}.json")
        paths[-1].write_text(json.dumps({"top1": a, "top5": b, "n": 10}))
    out = seed_summary(paths)
    assert out["runs"] == 3 and out["top1"]["mean"] == pytest.approx(0.8)
    assert out["top1"]["std"] == pytest.approx(np.std([0.9, 0.8, 0.7]))
    assert main([str(p) for p in paths]) == 0 and '"mean"' in capsys.readouterr().out
    assert main([str(tmp_path / "none.json")]) == 2


# -- two gloo ranks ---------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, init_file: str, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        acc = ClassificationAccumulator(7)
        for logits, labels, index in _batches()[rank::world]:  # a different share per rank
            acc.update(torch.from_numpy(logits), torch.from_numpy(labels), index)
        if rank == 1:  # the sampler's padding repeats a sample of rank 0
            logits, labels, index = _batches()[0]
            acc.update(torch.from_numpy(logits[:1]), torch.from_numpy(labels[:1]), index[:1])
        out = acc.compute()
        queue.put((rank, out["top1"], out["top5"], out["n"], out["confusion"].tolist()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_accumulator_gathers_across_two_gloo_ranks(tmp_path):
    queue = mp.get_context("spawn").Queue()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), queue), nprocs=2, join=True)
    results = dict((r[0], r[1:]) for r in (queue.get(timeout=30) for _ in range(2)))
    batches = _batches()
    top1, top5, cm = _oracle(
        np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    )
    for rank in (0, 1):
        assert results[rank][0] == pytest.approx(top1) and results[rank][1] == pytest.approx(top5)
        assert results[rank][2] == 20 and results[rank][3] == cm.tolist()


# -- short training runs on learnable fixtures -----------------------------------------------


def _model(name: str, num_classes: int) -> nn.Module:
    """A zoo model at a small width (fast on CPU)."""
    kwargs = {"num_classes": num_classes, "width": 8}
    if "convnet" in name:
        kwargs.update(hidden=32, temporal_output="clip")
    return create_model(name, **kwargs)


def _precise_bn(model: nn.Module, dataset) -> None:
    """Recompute the BatchNorm running statistics as exact averages over ``dataset``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=16):
            model(batch["input"])
    for m in norms:
        m.momentum = 0.1


def _fit_and_score(
    model, train, test, epochs: int, num_classes: int, lr: float = 1e-3, batch_size: int = 8
) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(epochs):
        train.set_epoch(epoch)
        model.train()
        for batch in DataLoader(train, batch_size=batch_size, shuffle=True):
            opt.zero_grad()
            classification_loss(model(batch["input"]), batch["label"]).backward()
            opt.step()
    _precise_bn(model, train)  # a few dozen steps leave the running averages behind
    model.eval()
    acc = ClassificationAccumulator(num_classes)
    with torch.no_grad():
        for batch in DataLoader(test, batch_size=32):
            acc.update(model(batch["input"]), batch["label"])
    return acc.compute()["top1"]


@pytest.mark.slow
def test_2d_model_learns_coloured_shapes_from_cifar_files(tmp_path):
    write_cifar(str(tmp_path), coloured_shape, per_batch=20, per_test=40)
    kw = {"val_size": 0, "verbose": False}
    train = create_dataset("cifar10", str(tmp_path), "train", **kw)
    test = create_dataset("cifar10", str(tmp_path), "test", **kw)
    model = _model("cp_resnet18_2d", 10)
    top1 = _fit_and_score(model, train, test, epochs=4, num_classes=10, lr=3e-3, batch_size=16)
    assert top1 > 0.6  # 4 balanced classes: chance is 0.25


@pytest.mark.slow
def test_3d_model_learns_moving_square_direction_from_jester_files(tmp_path):
    rng = np.random.default_rng(0)
    classes = ["Sliding Right", "Sliding Left", "Sliding Down", "Sliding Up"]
    splits, clips = {"train": [], "validation": []}, {}
    for i in range(64):
        clip, label = str(1000 + i), i % 4
        splits["train" if i < 48 else "validation"].append((clip, classes[label]))
        clips[clip] = [(f"{t + 1:05d}.jpg", f) for t, f in enumerate(moving_square(rng, label))]
    write_jester(str(tmp_path), classes, splits, clips)
    kw = {"mode": "video", "clip_length": 16, "image_size": 16, "verbose": False}
    train = create_dataset("jester", str(tmp_path), "train", augment=False, **kw)
    val = create_dataset("jester", str(tmp_path), "val", **kw)
    model = _model("convnet3d", 4)
    top1 = _fit_and_score(model, train, val, epochs=4, num_classes=4)
    assert top1 > 0.6  # chance is 0.25; the class is only in the motion


def test_cifar_loader_feeds_a_dataloader(tmp_path):
    write_cifar(str(tmp_path), coloured_shape, per_batch=4, per_test=4)
    ds = create_dataset("cifar10", str(tmp_path), "train", val_size=0, verbose=False)
    batch = next(iter(DataLoader(ds, batch_size=8, num_workers=0)))
    assert batch["input"].shape == (8, 3, 32, 32) and batch["label"].dtype == torch.int64
    assert os.path.isdir(tmp_path / "cifar-10-batches-py")
