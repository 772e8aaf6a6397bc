"""torchrun with 2 gloo processes on CPU == 1 process with the same global batch."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import standins
import torch

from hoconv.app.engine import read_checkpoint, train
from hoconv.app.engine.distributed import DistInfo, ShardSampler

HERE = Path(__file__).parent


def test_shard_sampler_splits_global_batches_like_one_process():
    one = list(ShardSampler(20, DistInfo(), shuffle=True, seed=3))
    shards = [
        list(ShardSampler(20, DistInfo(rank=r, world_size=2), shuffle=True, seed=3))
        for r in range(2)
    ]
    for b in range(20 // 4):  # global batch 4 = 2 per rank
        assert sorted(one[4 * b : 4 * b + 4]) == sorted(
            shards[0][2 * b : 2 * b + 2] + shards[1][2 * b : 2 * b + 2]
        )
    evals = [list(ShardSampler(7, DistInfo(rank=r, world_size=2), shuffle=False)) for r in range(2)]
    assert sorted(evals[0] + evals[1]) == list(range(7))  # every sample once, no padding


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["test_tiny2d", "test_tiny_bn"])  # BN: all-reduced statistics
def test_two_gloo_processes_match_one_process(tmp_path, model):
    standins.install()
    args = [
        "train",
        "--data",
        "test_tiny",
        "--model",
        model,
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "--data-arg",
        "size=32",
        "--out",
        str(tmp_path / "ddp"),
    ]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--nnodes=1",
        f"--master_port={_free_port()}",
        str(HERE / "standin_cli.py"),
        *args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = train(
        standins.tiny_config(
            epochs=2, lr_step=15, lr_gamma=0.1, data_kwargs={"size": 32}, model=model
        ),
        tmp_path / "one",
    )
    ddp = read_checkpoint(tmp_path / "ddp" / "last.pt")
    for got, want in zip(ddp["history"], one["history"]):
        assert got["val_n"] == want["val_n"] == 32
        for key in ("train_loss", "val_valence_ccc", "val_arousal_ccc", "val_valence_rmse"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    ref = read_checkpoint(tmp_path / "one" / "last.pt")["state_dict"]
    for key, value in ref.items():
        torch.testing.assert_close(ddp["state_dict"][key], value, rtol=1e-4, atol=1e-6)
    assert not list((tmp_path / "ddp").glob(".*.tmp"))  # rank 0 wrote, atomically, alone
