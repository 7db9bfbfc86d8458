"""Multi-process training on PyTorch's own engine: torchrun, DistributedDataParallel, gloo or NCCL.

``torchrun --nproc-per-node N -m genmodels train ...`` starts N copies of the CLI; each reads the
torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and joins one process
group: gloo on the CPU, NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``).

How each part is handled:
- Data: every process holds the dataset and takes its contiguous share of every global batch
  (``BatchStream``), so the global batch sequence is the same at any world size and a run saved at
  one world size resumes at another.
- Gradients: the model is wrapped once in DistributedDataParallel around a ``Dispatcher`` whose
  forward calls the model's loss methods by name, so ``loss``, ``discriminator_loss`` and
  ``generator_loss`` all go through DDP's gradient all-reduce. ``find_unused_parameters`` is on
  for adversarial models, whose critic step leaves the generator's parameters without gradients and
  whose generator step runs with the critic frozen.
- BatchNorm: on CUDA, BatchNorm layers become SyncBatchNorm (statistics over the global batch). On
  the CPU, SyncBatchNorm does not exist; batch statistics are per process, and DDP broadcasts rank
  0's running statistics to every process at each forward, so the saved buffers are rank 0's.
- EMA: every process updates its own EMA from identical, all-reduced weights, so the averages stay
  identical; rank 0 saves them.
- Logging, sample grids and checkpoints come from rank 0 only. Stop decisions (max_time, a NaN
  loss, Ctrl-C) are agreed with one small all-reduce per step, so no process waits forever for
  another that has stopped.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from genmodels.errors import GenmodelsError
from genmodels.models.base import Batch, LossOutput


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def from_env() -> DistInfo:
    """The process's place in a torchrun job (or a single process when not under torchrun)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise GenmodelsError("WORLD_SIZE, RANK and LOCAL_RANK must be integers; start with torchrun") from None
    return DistInfo(rank, world, local)


def init_group(info: DistInfo) -> None:
    """Join the process group when there is more than one process: gloo for CPU tensors, NCCL for CUDA ones."""
    if not info.enabled or dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=info.world)


def device_for(info: DistInfo, name: str = "auto") -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` under torchrun with CUDA, else as ``train.device`` says."""
    from genmodels.device import pick_device

    device = pick_device(name)
    if device.type == "cuda" and info.enabled:
        device = torch.device(f"cuda:{info.local_rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        gc.collect()  # free what still holds the group (a DDP wrapper caught in a reference cycle) while Python runs
        dist.destroy_process_group()


class Dispatcher(nn.Module):
    """Lets DDP see every loss method as a forward: ``forward("generator_loss", batch)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, method: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = getattr(self.model, method)(batch)
        return out.loss, out.metrics


class Engine:
    """Calls a model's loss methods through DistributedDataParallel."""

    def __init__(self, model: nn.Module, device: torch.device, adversarial: bool) -> None:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        self.ddp = nn.parallel.DistributedDataParallel(
            Dispatcher(model), device_ids=ids, find_unused_parameters=adversarial
        )

    def __call__(self, method: str, batch: Batch) -> LossOutput:
        loss, metrics = self.ddp(method, batch)
        return LossOutput(loss, metrics)


def agree(flags: list[float], device: torch.device) -> list[float]:
    """The element-wise maximum of ``flags`` over all processes (every process gets the same answer)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flags
    t = torch.tensor(flags, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average logged metrics over processes, so a record describes the whole global batch."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t, strict=True))


def broadcast(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process (configs, run directory names, loaded checkpoints)."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
