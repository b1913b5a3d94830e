"""Data-parallel training over processes started by `torchrun` (DistributedDataParallel).

`torchrun --nproc_per_node N -m featherface_tune train ...` starts N copies; each reads RANK,
LOCAL_RANK and WORLD_SIZE and joins one process group (NCCL on GPUs, gloo on CPUs). A step then
equals one process's step on the same global batch, up to float rounding:

- --batch-size is the global batch; each global batch of the epoch order is cut into N contiguous
  pieces, one per rank (the last, shorter batch too);
- the loss normalisers (positives, landmark faces) are summed over the ranks, so each rank's loss
  is its share of the global loss; DDP averages gradients, so the loss is scaled by N first;
- BatchNorm statistics are those of the global batch (`GlobalBatchNorm`: the sums are all-reduced
  with autograd, which also works on CPUs, where torch's SyncBatchNorm does not);
- the stop decisions (time budget) are agreed on by all ranks; rank 0 alone writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from featherface_tune.errors import InputError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes files (checkpoints, model.pt): rank 0 only."""
        return self.rank == 0


def launched_world() -> World:
    """The world `torchrun` describes in the environment (one process without it)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise InputError("WORLD_SIZE / RANK / LOCAL_RANK must be integers (as torchrun sets them)") from None
    return World(rank, size, local)


def join(world: World, device: torch.device) -> None:
    """Join the process group (once per process): NCCL on CUDA, gloo otherwise."""
    if world.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank,
                                world_size=world.size)


def check_batches(n_images: int, batch_size: int, world: World) -> None:
    """Every rank needs images in every global batch."""
    if not world.distributed:
        return
    if batch_size < world.size:
        raise InputError(field="batch_size", value=batch_size,
                         rule=f"the global batch must give each of the {world.size} processes at least one image")
    last = n_images % batch_size
    if 0 < last < world.size:
        raise InputError(field="batch_size", value=batch_size, refs=("batch_size", "subset"),
                         rule=f"the last batch of the epoch holds {last} image(s), fewer than the {world.size} "
                              "processes; choose another {batch_size} or {subset}")


def shard(positions: Sequence[Any], world: World) -> list[Any]:
    """This rank's contiguous piece of one global batch (pieces differ by at most one item)."""
    n, k = len(positions), world.size
    start = world.rank * (n // k) + min(world.rank, n % k)
    return list(positions[start:start + n // k + (world.rank < n % k)])


class ShardedBatches(torch.utils.data.Sampler[list[Any]]):
    """Batches of (epoch, index) keys: the global batches of an `EpochSampler`'s order, this rank's
    piece of each. `set_epoch` goes through to the sampler."""

    def __init__(self, sampler: Any, batch_size: int, world: World, drop_last: bool = False):
        self.sampler, self.batch_size, self.world, self.drop_last = sampler, batch_size, world, drop_last

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.sampler.set_epoch(epoch, start)

    def __iter__(self) -> Iterator[list[Any]]:
        keys = list(self.sampler)
        for b in range(0, len(keys), self.batch_size):
            if self.drop_last and b + self.batch_size > len(keys):
                return  # a short last batch is left out (`drop_last`)
            yield shard(keys[b:b + self.batch_size], self.world)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is the all-reduced sum of the gradients (every rank's loss
    depends on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The sum of `t` over the ranks, differentiable (identity in one process)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return t
    return _SumOverRanks.apply(t)


def any_rank(flag: bool) -> bool:
    """True when `flag` is true on any rank (so every rank takes the same branch)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the whole global batch's: per-channel sums are
    all-reduced with autograd (two passes, mean then squared deviations), the running statistics
    updated as BatchNorm2d does (unbiased variance, momentum or cumulative average)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        x = x.float()  # as autocast runs batch_norm: statistics and output in float32
        dims = (0, 2, 3)
        count = sum_over_ranks(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
        mean = sum_over_ranks(x.sum(dims)) / count
        var = sum_over_ranks(((x - mean[None, :, None, None]) ** 2).sum(dims)) / count
        tracked = self.num_batches_tracked
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None \
                and tracked is not None:
            with torch.no_grad():
                tracked.add_(1)
                m = (1.0 / float(tracked) if self.momentum is None else self.momentum)
                unbiased = var * (count / (count - 1).clamp(min=1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def global_batch_norm(model: nn.Module, on: bool) -> None:
    """Switch the model's BatchNorm2d layers to GlobalBatchNorm (on) or back (off), in place: the
    parameters and buffers, hence state dicts, stay the same."""
    for m in model.modules():
        if on and type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm
        elif not on and type(m) is GlobalBatchNorm:
            m.__class__ = nn.BatchNorm2d  # type: ignore[assignment]


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """The module the steps run: DDP over `model` in a world of several processes, else `model`."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # buffers are identical on every rank (global statistics): no need to broadcast them each step
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
