"""One Task object per task: training-time validation and `evaluate` give the same numbers."""

import numpy as np
import pytest
import standins
import torch

from hoconv.app.affect.labels import EXPRESSIONS
from hoconv.app.classification import ClassificationAccumulator, topk_accuracy
from hoconv.app.engine import evaluate, tasks, train


@pytest.fixture(autouse=True)
def _standins():
    standins.install()


@pytest.mark.parametrize("task", ["affect", "classify"])
def test_validation_and_evaluate_agree(task, tmp_path):
    data = {"size": 24, "classify": task == "classify"}
    result = train(standins.tiny_config(task=task, epochs=1, data_kwargs=data), tmp_path / "r")
    during = result["best"]["metrics"]
    after = evaluate(tmp_path / "r" / "best.pt", tmp_path / "ev", split="val", plots_too=False)
    for key, value in during.items():
        assert after[key] == pytest.approx(value, rel=1e-12), key


def test_get_refuses_unknown_task():
    with pytest.raises(ValueError, match="'affect' or 'classify'"):
        tasks.get("regress")


def test_top_k_is_one_function_for_both_paths():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(50, 7, generator=g), torch.randint(0, 7, (50,), generator=g)
    acc = ClassificationAccumulator(7)
    acc.update(logits, labels)
    direct = topk_accuracy(logits, labels, (1, 5))
    task = tasks.get("classify").metrics({"logits": logits.numpy(), "label": labels.numpy()})
    assert acc.compute(gather=False)["top1"] == direct["top1"] == task["top1"]
    assert acc.compute(gather=False)["top5"] == direct["top5"] == task["top5"]
    want = np.mean([int(y) in torch.topk(x, 5).indices.tolist() for x, y in zip(logits, labels)])
    assert direct["top5"] == pytest.approx(want)
    assert topk_accuracy(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), (1, 5))["top5"] == 1.0


def test_expression_labels_are_one_tuple():
    from hoconv.app.predict import model

    assert model.EXPRESSIONS is EXPRESSIONS is tasks.AffectTask.labels
    assert tasks.NUM_EXPRESSIONS == len(EXPRESSIONS) == 8
