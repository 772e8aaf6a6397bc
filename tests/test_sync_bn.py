"""AllReduceBatchNorm over 2 gloo processes == BatchNorm of one process on the whole batch."""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from hoconv.app.engine.sync_bn import AllReduceBatchNorm, convert_batchnorm

HERE = Path(__file__).parent

# Each rank: its half of a fixed batch through conv -> BN2d -> flatten -> BN1d, loss on its
# rows, backward; saves outputs, parameter and input gradients, running statistics.
CHILD = textwrap.dedent(
    """
    import sys, torch
    import torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from test_sync_bn import make_model, make_batch, local_loss
    from hoconv.app.engine.sync_bn import convert_batchnorm
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = convert_batchnorm(make_model())
    x = make_batch()[4 * rank : 4 * rank + 4].clone().requires_grad_(True)
    for _ in range(2):  # two steps: running statistics accumulate
        out = model(x)
    local_loss(out, rank).backward()
    torch.save({{"out": out.detach(), "x_grad": x.grad,
                "grads": {{n: p.grad for n, p in model.named_parameters()}},
                "state": model.state_dict()}}, {out!r}.format(rank))
    dist.destroy_process_group()
    """
)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.BatchNorm1d(64),
        nn.Linear(64, 2),
    )  # fmt: skip


def make_batch() -> torch.Tensor:
    return torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(1)) * 3 + 1


def local_loss(out: torch.Tensor, rank: int) -> torch.Tensor:
    weights = torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape) / 7 + rank
    return (out * weights).sin().sum()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
    out = str(tmp_path / "rank{}.pt")
    code = CHILD.format(tests=str(HERE), out=out)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env={**env, "RANK": str(r)}, stderr=subprocess.PIPE
        )  # fmt: skip
        for r in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-2000:]
    ranks = [torch.load(out.format(r)) for r in range(2)]

    model = make_model()  # one process, the whole batch of 8
    x = make_batch().requires_grad_(True)
    for _ in range(2):
        full = model(x)
    sum(local_loss(full[4 * r : 4 * r + 4], r) for r in range(2)).backward()

    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), full.detach())
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in ranks]), x.grad)
    for name, p in model.named_parameters():  # DDP sums (then averages) these over ranks
        torch.testing.assert_close(ranks[0]["grads"][name] + ranks[1]["grads"][name], p.grad)
    for key, value in model.state_dict().items():
        for r in ranks:
            torch.testing.assert_close(r["state"][key], value)


def test_conversion_keeps_parameters_and_is_plain_batchnorm_without_a_group():
    model = make_model().train()
    reference = make_model().train()
    converted = convert_batchnorm(model)
    assert sum(isinstance(m, AllReduceBatchNorm) for m in converted.modules()) == 2
    assert converted.state_dict().keys() == reference.state_dict().keys()
    x = make_batch()
    torch.testing.assert_close(converted(x), reference(x))
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[key], value)
    with pytest.raises(ValueError, match="expects \\(N, C, ...\\)"):
        AllReduceBatchNorm(3)(torch.randn(3))


def test_python_m_refuses_a_shadowing_hoconv_folder(tmp_path):
    """A ``hoconv/`` package in the current folder is named in one line, exit 2."""
    (tmp_path / "hoconv").mkdir()
    (tmp_path / "hoconv" / "__init__.py").write_text("")
    main = HERE.parent / "hoconv" / "__main__.py"
    code = f"import hoconv, runpy, sys; sys.argv = ['hoconv', '--version']; runpy.run_path({str(main)!r}, run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": ""})  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()
    assert len(line) == 1 and str(tmp_path / "hoconv") in line[0] and "--no-python" in line[0]
