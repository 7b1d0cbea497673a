"""One training run over several processes: DistributedDataParallel under ``torchrun``.

``torchrun --nproc-per-node N -m falsecli train ...`` starts N copies of the command, and each
finds its rank in the environment torchrun sets. The run is meant to *be* the single-process
run, its sums taken in another order: every rank keeps the whole training pool, draws the same
batch order and augmentations from the same seeds, and takes its contiguous share of every
global batch; batch-norm statistics (SyncBatchNorm), dropout masks and the loss normalisation
are those of the global batch, and DDP's gradient average is undone by the loss scale. The
tracked sections are split among the ranks and their predictions gathered on rank 0, the only
process that touches the working directory (stage lock, tracking rows, checkpoints, manifest).
"""

from __future__ import annotations

import atexit
import itertools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from falsecli.core import console
from falsecli.core.errors import FalseCliError
from falsecli.core.runtime import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run; the default is a single process."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes."""
        return self.rank == 0

    @property
    def multi(self) -> bool:
        return self.world > 1

    def share(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items; shares differ by at most one."""
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)


#: a run in one process
SINGLE = Ranks()


def from_env() -> Ranks:
    """The ranks torchrun announces in RANK, WORLD_SIZE and LOCAL_RANK (one process without)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise FalseCliError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; start several "
                            "processes with torchrun, not by setting them by hand") from None
    if world < 1 or not 0 <= rank < world:
        raise FalseCliError(f"RANK={rank} and WORLD_SIZE={world} do not fit; start several "
                            "processes with torchrun")
    return Ranks(rank, world, local)


def setup(device_spec: str) -> tuple[Ranks, torch.device]:
    """This process's ranks and compute device; under torchrun, join the process group.

    Each process takes the GPU of its local rank (``--device cuda``/``auto``), or the CPU with
    the gloo backend. Ranks other than 0 go quiet: no progress, nothing on stdout, so a
    torchrun command prints what the single-process command prints, once.
    """
    ranks = from_env()
    device = resolve_device(device_spec)
    if device.type == "cuda":
        if ranks.multi:
            if device.index is not None:
                raise FalseCliError(
                    f"--device {device_spec} names one GPU but torchrun started {ranks.world} "
                    "processes; use --device cuda (each process takes the GPU of its local rank)")
            if ranks.local >= torch.cuda.device_count():
                raise FalseCliError(
                    f"local rank {ranks.local} has no GPU: {torch.cuda.device_count()} visible "
                    "on this node; start at most that many processes per node")
            device = torch.device("cuda", ranks.local)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    if ranks.multi and not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        atexit.register(_shutdown)
        if not ranks.main:
            console.set_quiet(True)
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)
    if ranks.multi and dist.get_world_size() != ranks.world:
        raise FalseCliError(f"the process group has {dist.get_world_size()} ranks but "
                            f"WORLD_SIZE is {ranks.world}; start the run with torchrun")
    return ranks, device


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------- collectives


def checked(ranks: Ranks, fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 only (None elsewhere). A FalseCliError it raises is raised on every
    rank, so that all of them stop with rank 0's message instead of waiting for it."""
    if not ranks.multi:
        return fn()
    message: list[Any] = [None]
    result = None
    try:
        if ranks.main:
            result = fn()
    except FalseCliError as exc:
        message[0] = str(exc)
        dist.broadcast_object_list(message, src=0)
        raise
    dist.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise FalseCliError(message[0])
    return result


def broadcast(ranks: Ranks, obj: T) -> T:
    """Rank 0's ``obj`` on every rank (a pickled copy)."""
    if not ranks.multi:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(ranks: Ranks, tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks, in place (no host synchronisation on GPUs)."""
    if ranks.multi:
        dist.all_reduce(tensor)
    return tensor


def gather(ranks: Ranks, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor | None:
    """Every rank's 1-D ``tensor`` (rank r's holds ``sizes[r]`` items) joined in rank order
    on rank 0; None on the others."""
    if not ranks.multi:
        return tensor
    width = max(max(sizes), 1)
    padded = torch.zeros(width, dtype=tensor.dtype, device=tensor.device)
    padded[:tensor.numel()] = tensor
    parts = [torch.empty_like(padded) for _ in sizes] if ranks.main else None
    dist.gather(padded, parts, dst=0)
    if parts is None:
        return None
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


def barrier(ranks: Ranks) -> None:
    if ranks.multi:
        dist.barrier()


def shard(sizes: list[int], world: int) -> list[slice]:
    """Split items of ``sizes`` (e.g. pixels per section) into ``world`` contiguous runs of
    about equal total size, each cut where the running total is nearest its share; a run is
    empty when there are fewer items than ranks."""
    cum = np.cumsum([0, *sizes])
    cuts = [0, *(int(np.abs(cum - k * cum[-1] / world).argmin()) for k in range(1, world)),
            len(sizes)]
    return [slice(a, b) for a, b in itertools.pairwise(cuts)]


# ---------------------------------------------------------------- the model


class _AllSum(torch.autograd.Function):
    """The sum of a tensor over the ranks, differentiable: each rank's input gradient is the
    sum of every rank's output gradient (every rank's loss depends on every rank's input)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """Batch normalisation over the global batch of every rank, in plain differentiable ops.

    torch's SyncBatchNorm does this with fused kernels on GPUs only; this is the same
    arithmetic (two-pass mean and variance, unbiased running variance) for the CPU/gloo path,
    so that a CPU run under torchrun also equals its single-process run.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        dims, shape = (0, 2, 3), (1, -1, 1, 1)
        xf = x.float()
        count = torch.full((1,), x.numel() / x.shape[1], dtype=xf.dtype, device=x.device)
        sums = _AllSum.apply(torch.cat([xf.sum(dims), count]))
        n = sums[-1].detach()
        mean = sums[:-1] / n
        centred = xf - mean.view(shape)
        var = _AllSum.apply(centred.square().sum(dims)) / n
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                        else self.momentum)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), momentum)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def _swap(module: nn.Module, kind: type[nn.Module], make: Callable[[Any], nn.Module]
          ) -> nn.Module:
    """Replace every ``kind`` submodule (and ``module`` itself) by ``make(old)``."""
    if isinstance(module, kind):
        return make(module)
    for name, child in module.named_children():
        setattr(module, name, _swap(child, kind, make))
    return module


def _global_bn(bn: nn.BatchNorm2d) -> GlobalBatchNorm2d:
    new = GlobalBatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine,
                            bn.track_running_stats, device=bn.running_mean.device)
    new.load_state_dict(bn.state_dict())
    if bn.affine:  # the same Parameter objects, so an optimizer made before still holds them
        new.weight, new.bias = bn.weight, bn.bias
    new.train(bn.training)
    return new


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch norm over the global batch: torch's SyncBatchNorm on GPUs, else our own."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _swap(model, nn.BatchNorm2d, _global_bn)


class BatchDropout(nn.Module):
    """Dropout whose mask for a sample depends only on its generator's state and the sample's
    place in the global batch, so that a batch split over ranks drops what one process would.

    ``rows = (n, first, stop)``: this rank holds samples ``first:stop`` of a global batch of
    ``n``; the mask is drawn for all ``n`` and sliced. None: the input is the whole batch.
    """

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p = p
        self.generator = generator
        self.rows: tuple[int, int, int] | None = None

    @torch.compiler.disable  # a generator cannot be traced: the draw runs eagerly
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        n, first, stop = self.rows or (x.shape[0], 0, x.shape[0])
        draw = torch.rand((n, *x.shape[1:]), generator=self.generator, device=x.device)
        keep = (draw[first:stop] >= self.p).to(x.dtype)
        return x * keep * (1.0 / (1.0 - self.p))


def batch_dropout(model: nn.Module, generator: torch.Generator) -> list[BatchDropout]:
    """Replace the model's dropout layers (ASPP's) by :class:`BatchDropout`; returns them."""
    _swap(model, nn.Dropout, lambda d: BatchDropout(d.p, generator))
    return [m for m in model.modules() if isinstance(m, BatchDropout)]


def wrap(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` under torchrun, else ``model`` itself.

    Buffers are not broadcast: with global batch statistics every rank computes the same
    running statistics, and a broadcast per step would only cost time.
    """
    if not ranks.multi:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None, broadcast_buffers=False)
