"""Multi-process training on torch.distributed (torchrun): set-up, rank helpers, metric reduction.

`torchrun --nproc_per_node N tools/train.py CONFIG` sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous variables; several machines use torchrun's usual `--nnodes`, `--node_rank`,
`--rdzv_endpoint` flags. Backend: gloo on CPU, nccl on CUDA.

A dead worker. When a process dies, the others' next collective fails at once (the connection is
reset); when one hangs, theirs fail after the process-group timeout: 10 minutes, or the seconds in the
environment variable POINTSTN_DIST_TIMEOUT (keep it above the longest validation, which only rank 0
runs while the others wait). The trainer turns either failure into a one-line error
(`is_communication_error` tells it apart from other RuntimeErrors).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pointstn.errors import PointstnError

DEFAULT_TIMEOUT = datetime.timedelta(minutes=10)
TIMEOUT_VARIABLE = "POINTSTN_DIST_TIMEOUT"
# words in the RuntimeErrors that gloo/nccl raise when a peer died or stopped responding
_COMMUNICATION_MARKERS = ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout")


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


def timeout_from_environment() -> datetime.timedelta:
    """The process-group timeout: POINTSTN_DIST_TIMEOUT seconds if set, else DEFAULT_TIMEOUT."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise PointstnError(f"{TIMEOUT_VARIABLE}={text!r} must be a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def is_communication_error(exc: BaseException) -> bool:
    """True for the errors a collective raises when another process died or stopped responding."""
    if isinstance(exc, getattr(dist, "DistError", ())):  # torch >= 2.1 names its communication errors
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in message for marker in _COMMUNICATION_MARKERS)


def init_distributed(*, timeout: datetime.timedelta | None = None) -> DistributedContext:
    """Join the process group that torchrun describes in the environment (or run single-process).

    timeout: how long a collective waits for the other processes (None = `timeout_from_environment()`).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timeout_from_environment() if timeout is None else timeout)
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
