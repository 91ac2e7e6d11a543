"""Data-parallel training under torchrun: one process per GPU (or CPU worker).

``torchrun --nproc-per-node N -m hrnet_edge.cli train ...`` (or ``hrnet-edge train
--nproc N``, which runs that) starts N processes; each one trains on its share of every
batch (``[train] batch_size`` is per process) with DistributedDataParallel, NCCL on
GPUs and gloo on CPUs. A :class:`DistributedSampler` gives each process a different
slice of one shuffled order (``set_epoch`` reshuffles it per epoch); optionally
(``[train] sync_bn``) BatchNorm statistics are computed over all processes' images.
The learning rate follows the linear scaling rule when ``[train] lr_reference_batch``
is set: ``lr x batch_size x N / lr_reference_batch``. Training losses are averaged
over the processes; process 0 evaluates and sends the metrics to the others, and only
it writes checkpoints, metrics and logs. Without torchrun, :func:`context` is a
single-process stand-in and nothing here changes the plain path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

# How long a collective waits for a process that stopped (a killed rank): torchrun ends
# the job when a worker dies, this bounds the wait when it cannot tell.
TIMEOUT = timedelta(minutes=int(os.environ.get("HRNET_EDGE_DIST_TIMEOUT_MIN", "30")))


def launched() -> bool:
    """True inside a process that torchrun started with more than one worker."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ


@dataclass
class World:
    """The processes of one run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def lr_scale(self, batch_size: int, reference: int | None) -> float:
        """The linear scaling rule's factor (1 without a reference batch)."""
        return 1.0 if reference is None else batch_size * self.size / reference

    def mean(self, value: float) -> float:
        """``value`` averaged over the processes."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.size

    def from_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed by process 0 and sent to every process."""
        if not self.active:
            return fn()
        box = [fn() if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: nn.Module, sync_bn: bool) -> nn.Module:
        """``model`` (already on its device) for training: with SyncBatchNorm when
        asked, inside DDP when there is more than one process (the module itself keeps
        the weights: save that). DDP starts every process from process 0's weights."""
        if not self.active:
            return model
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        if sync_bn:
            convert_sync_bn(model, device)
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sampler(self, dataset, seed: int, epoch: int):
        """Every process's slice of one shuffled order, reshuffled per epoch."""
        from torch.utils.data.distributed import DistributedSampler

        s = DistributedSampler(dataset, num_replicas=self.size, rank=self.rank, shuffle=True, seed=seed,
                               drop_last=True)
        s.set_epoch(epoch)
        return s

    def close(self) -> None:
        if self.active:
            dist.destroy_process_group()


_WORLD: World | None = None


def context() -> World:
    """The run's :class:`World`; the first call under torchrun joins the process group
    (NCCL for CUDA tensors and gloo for CPU ones when CUDA is there, else gloo)."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    if not launched():
        _WORLD = World()
        return _WORLD
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        # NCCL for CUDA tensors (DDP on GPUs), gloo for CPU ones: the metrics and
        # objects sent between processes, and a model on a CPU ([train] device = "cpu")
        backend = "cpu:gloo,cuda:nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    _WORLD = World(rank=rank, size=size, local_rank=local, device=device)
    return _WORLD


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of every process's batch together,
    on CPUs (torch's SyncBatchNorm runs on GPUs only). Two passes, each one differentiable
    all-reduce: the mean, then the variance around it, as a one-process BatchNorm over the
    whole batch computes them, in fp32 whatever autocast gave it (a bf16 sum over a batch
    would lose the statistics, and bf16 counts only up to 256 exactly). Eval mode is
    plain BatchNorm."""

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dtype, x = x.dtype, x.float()
        c, group = x.shape[1], _bn_group()
        count = torch.tensor([x.numel() // c], dtype=x.dtype)
        total = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), count]), group=group)
        n = total[-1]
        mean = total[:c] / n
        centred = x - mean.view(1, c, 1, 1)
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3)), group=group) / n
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / max(float(n) - 1, 1.0), alpha=m)
            self.num_batches_tracked += 1
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        return (y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)).to(dtype)


_BN_GROUP = None


def _bn_group():
    """A process group of its own for the BatchNorm statistics: on gloo, DDP's
    asynchronous gradient all-reduces and these (run inside backward) share one queue
    per group, and their order can differ between processes."""
    global _BN_GROUP
    if _BN_GROUP is None:
        _BN_GROUP = dist.new_group(backend="gloo")
    return _BN_GROUP


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """Swap every BatchNorm2d of ``model`` in place for its synchronised form (same
    parameters and buffers, so checkpoints are unchanged)."""
    if device.type == "cuda":
        for name, child in model.named_children():
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        return model
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.BatchNorm2d:
                sync = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                        child.track_running_stats)
                # the same tensors, not copies: an optimizer made before keeps working
                sync.weight, sync.bias = child.weight, child.bias
                sync.running_mean, sync.running_var = child.running_mean, child.running_var
                sync.num_batches_tracked = child.num_batches_tracked
                sync.train(child.training)
                setattr(module, name, sync)
    return model
