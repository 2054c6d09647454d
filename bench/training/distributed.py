"""One run on several processes (``torchrun --nproc_per_node N -m bench.ablate ...``): the process group, each rank's
slice of the global batch, the model wrapped in ``DistributedDataParallel``, and the messages by which the other
ranks follow rank 0.

Rank 0 does everything a single process does (it claims the jobs, validates, scores, writes every file); ranks 1 …
N-1 only take part in training: rank 0 names each job it trains (``broadcast``), all ranks train it together on
their shares of the same global batch, and the others wait while rank 0 alone validates and scores (``on_main``).
Without torchrun (or before ``init``) every function is a no-op: one process, world size 1.

Why the result equals one process's: every rank builds the same network from the same seed (DDP checks this by
broadcasting rank 0's weights), takes the contiguous slice ``rank`` of the same global batch (``shard``) and DDP
averages the gradients. For a loss that is a mean over the batch's samples (every loss of colorbench with its
default ``reduction="mean"``: pixel losses, KL with or without rebalancing weights, perceptual, style and LPIPS
terms), the mean of N equal shards' gradients is the gradient of the whole batch's loss, up to float rounding.
It does not hold for a loss that is not a mean over samples (``reduction="sum"``: each shard's sum is 1/N of the
batch's, so the step is N times smaller) nor for a loss that trains a network of its own in ``extra_step`` (a GAN
critic): each rank would train its own critic on its own shard and nothing averages the critics, so
``bench.ablate`` refuses those losses under torchrun. BatchNorm is the other place where a shard differs from the
batch: ``wrap`` makes its statistics those of the global batch (``SyncBatchNorm`` on CUDA, ``GlooSyncBatchNorm``
on the CPU).

A low-layer module: it imports only torch and the standard library.
"""
from __future__ import annotations

import atexit
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["GlooSyncBatchNorm", "Stopped", "broadcast", "init", "is_main", "mean", "on_main", "rank", "shard",
           "world_size", "wrap"]

#: How long a rank waits for rank 0 in ``broadcast`` and ``on_main``: rank 0 may score a run's test images, or wait
#: for other workers' runs, for hours between two jobs. A rank that dies does not leave the others waiting this
#: long: torchrun stops every process of the group when one fails.
WAIT = timedelta(days=7)

_control = None  # a gloo group for rank 0's messages (CPU objects, with the long WAIT), whatever the backend


class Stopped(RuntimeError):
    """Rank 0 stopped training this job (its validation hook raised, e.g. its trial was taken over or pruned)."""


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group (its ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT``) when ``WORLD_SIZE`` > 1; returns the device this rank trains on.

    Args:
        device: the device asked for (``bench.core.device.pick_device``): on CUDA each rank takes GPU ``LOCAL_RANK`` and
            the group talks NCCL, on the CPU gloo.
    """
    global _control
    device = torch.device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if dist.is_initialized():  # joined already (e.g. by a script that then runs a command's main)
        return torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():  # NCCL cannot put two ranks on one GPU
            raise ValueError(f"torchrun started local rank {local} but this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s): --nproc_per_node must be at most that")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))
    _control = dist.new_group(backend="gloo", timeout=WAIT)
    atexit.register(_close)
    return device


def _close() -> None:
    global _control
    if dist.is_initialized():
        dist.destroy_process_group()
    _control = None


def world_size() -> int:
    """The number of processes training each run together (1 without torchrun)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process is rank 0: the one that claims jobs, validates, scores and writes files."""
    return rank() == 0


def shard(batch: torch.Tensor | None, rank_: int | None = None, world: int | None = None) -> torch.Tensor | None:
    """This rank's contiguous slice of a global batch: rank r takes samples ``[r·B/N, (r+1)·B/N)``, so the shards
    of ranks 0 … N-1 in order are the global batch.

    Args:
        batch: the global batch (``B×…``), or None (returned as is).
        rank_: the rank (default: this process's).
        world: the number of ranks (default: this group's).

    Raises:
        ValueError: B is not a multiple of N (unequal shards would weigh their samples unequally).
    """
    world = world_size() if world is None else world
    if batch is None or world == 1:
        return batch
    r = rank() if rank_ is None else rank_
    n, left = divmod(len(batch), world)
    if left:
        raise ValueError(f"a batch of {len(batch)} cannot be split evenly over {world} processes")
    return batch[r * n:(r + 1) * n]


def wrap(model: nn.Module, forward: nn.Module | None = None) -> nn.Module:
    """What a training step should call instead of ``forward`` (``model`` when None): unchanged in one process;
    under torchrun ``model`` with its BatchNorm layers synchronised (in place: the same parameters and buffers,
    the same ``state_dict``) inside ``DistributedDataParallel``, compiled again if ``forward`` was a compiled
    ``model``.

    Args:
        model: the network, on this rank's device, in its final state (DDP broadcasts rank 0's weights here).
        forward: what the step calls now (``torch.compile(model)`` or ``model``).
    """
    forward = model if forward is None else forward
    if world_size() == 1:
        return forward
    device = next(model.parameters()).device
    _sync_batchnorm(model, device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return torch.compile(ddp) if forward is not model else ddp


def _sync_batchnorm(module: nn.Module, device: torch.device) -> None:
    """Replace every BatchNorm below ``module`` by a synchronised one sharing its parameters and buffers."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, (nn.SyncBatchNorm,
                                                                                        GlooSyncBatchNorm)):
            # torch's SyncBatchNorm refuses CPU tensors; GlooSyncBatchNorm computes the same statistics there
            sync = nn.SyncBatchNorm if device.type == "cuda" else GlooSyncBatchNorm
            new = sync(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            _sync_batchnorm(child, device)


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, over every rank, on any device (torch's
    ``SyncBatchNorm`` runs on GPUs only): the per-channel count, sum and sum of squares are summed with a
    differentiable all-reduce, whose backward pass sums each rank's gradient of the statistics, so the gradients
    are those of BatchNorm over the whole batch. In evaluation, or in one process, it is plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() / x.shape[1], dtype=torch.float64, device=x.device)
        xd = x.double()  # sums of squares in float64: E[x²] - E[x]² cancels badly in float32
        stats = _SumOverRanks.apply(torch.cat([count, xd.sum(dims), (xd * xd).sum(dims)]))
        n, c = stats[0], x.shape[1]
        mu, var = stats[1:1 + c] / n, (stats[1 + c:] / n - (stats[1:1 + c] / n) ** 2).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(mu.to(self.running_mean.dtype), alpha=f)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - f).add_(unbiased.to(self.running_var.dtype), alpha=f)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = ((xd - mu.view(shape)) / torch.sqrt(var.view(shape) + self.eps)).to(x.dtype)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over the ranks, differentiable: its gradient is the sum of the ranks' gradients (each
    rank's loss depends on every rank's share of the sum)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the ranks (``t`` itself in one process); every rank must call it at the same point."""
    if world_size() == 1:
        return t
    # gloo reduces CPU tensors, NCCL device tensors: the default group's backend decides
    out = t.detach().clone() if dist.get_backend() == "nccl" else t.detach().cpu().clone()
    dist.all_reduce(out)
    return (out / world_size()).to(t.device)


def broadcast(obj=None):
    """Rank 0's ``obj`` (any picklable object: a job's key, a checkpoint) on every rank; ``obj`` itself in one
    process. Every rank must call it at the same point; the others wait up to ``WAIT`` for rank 0."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def on_main(fn, *args) -> None:
    """Call ``fn(*args)`` on rank 0 alone (nothing when ``fn`` is None) while the other ranks wait for it, and stop
    every rank with it: when ``fn`` raises, rank 0 re-raises and the others raise ``Stopped``.

    Raises:
        Stopped: on a rank other than 0, when ``fn`` raised on rank 0.
    """
    if world_size() == 1:
        if fn is not None:
            fn(*args)
        return
    err = None
    if is_main() and fn is not None:
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 (re-raised below, once the others know)
            err = e
    if broadcast(None if err is None else type(err).__name__) is not None and not is_main():
        raise Stopped("rank 0 stopped this job")
    if err is not None:
        raise err
