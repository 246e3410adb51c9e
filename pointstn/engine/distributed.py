"""Multi-process training on torch.distributed (torchrun): set-up, rank helpers, metric reduction.

`torchrun --nproc_per_node N tools/train.py CONFIG` sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous variables; several machines use torchrun's usual `--nnodes`, `--node_rank`,
`--rdzv_endpoint` flags. Backend: gloo on CPU, nccl on CUDA. A timeout makes the survivors of a dead
worker exit with a message instead of hanging.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(*, timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> DistributedContext:
    """Join the process group that torchrun describes in the environment (or run single-process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return DistributedContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def reduce_mean(values: dict[str, float], context: DistributedContext) -> dict[str, float]:
    """Average scalar metrics over all ranks (identity when single-process)."""
    if not context.enabled or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return {k: float(v) / context.world_size for k, v in zip(keys, tensor.tolist(), strict=True)}


def any_rank(flag: bool, context: DistributedContext) -> bool:
    """True on every rank if it is true on any (e.g. a stop request seen by one process)."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
