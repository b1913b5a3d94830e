"""Data-parallel training (torchrun, DistributedDataParallel over gloo on CPUs): the global batch is
shared out, the loss and BatchNorm statistics are the global batch's, one process writes the run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from featherface_tune.errors import InputError
from featherface_tune.training.distributed import World, check_batches, shard


def test_global_batches_are_shared_out_in_contiguous_pieces() -> None:
    batch = list(range(7))
    pieces = [shard(batch, World(r, 3)) for r in range(3)]
    assert pieces == [[0, 1, 2], [3, 4], [5, 6]]
    assert shard(batch, World()) == batch
    check_batches(10, 4, World(0, 2))  # last batch of 2: one image each
    with pytest.raises(InputError, match="^batch_size=4: the last batch .* choose another batch_size or subset$"):
        check_batches(9, 4, World(0, 2))
    with pytest.raises(InputError, match="^batch_size=1: the global batch"):
        check_batches(8, 1, World(0, 2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_torchrun_two_cpu_processes_match_one(tmp_path: Path) -> None:
    """Two gloo processes train what one process trains on the same global batch: same losses, one
    model written, `world_size` in the JSON. torch's fp32 BatchNorm backward on the CPU is ~2e-3 (relative)
    away from float64 on this model, the all-reduced one 3e-5, so the two runs' gradients differ by ~2e-3:
    a small learning rate keeps that from growing, and weights are compared by their change."""
    from featherface_tune.data.demo import write_demo
    from featherface_tune.models.builder import build_model
    from featherface_tune.models.presets import get_preset
    from featherface_tune.training.loop import _seed_all

    write_demo(tmp_path / "d", train=8, val=1, seed=0)
    args = ["train", "--data", str(tmp_path / "d"), "--preset", "featherface-489k", "--epochs", "1",
            "--image-size", "64", "--batch-size", "4", "--pretrained", "none", "--optimizer", "sgd", "--lr", "1e-4", "--json",
            "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the one-process run in this process (CliRunner): only torchrun's two need processes of their own
    from typer.testing import CliRunner

    from featherface_tune.cli import app

    threads = torch.get_num_threads()  # --threads 1 sets this process's
    try:
        one = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "one")])
    finally:
        torch.set_num_threads(threads)
    assert one.exit_code == 0, one.output[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                          "-m", "featherface_tune", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = json.loads(one.stdout), json.loads(two.stdout)  # one JSON: rank 0 alone reports
    assert (a["world_size"], b["world_size"]) == (1, 2) and a["global_step"] == b["global_step"] == 2
    assert b["history"][0]["images"] == 8
    assert b["first_loss"] == pytest.approx(a["first_loss"], rel=1e-6)
    assert b["last_loss"] == pytest.approx(a["last_loss"], rel=1e-4)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["last.pt", "model.pt"]
    _seed_all(0)
    start = build_model(get_preset("featherface-489k")).state_dict()
    wa = torch.load(tmp_path / "one" / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "two" / "model.pt", weights_only=True)["state_dict"]
    for k in start:
        if not k.endswith("weight") or start[k].ndim < 2:
            continue
        change = (wa[k] - start[k]).norm()
        assert change > 0, k
        assert float((wb[k] - wa[k]).norm() / change) < 1e-2, k
