"""Process-group helpers for running the evaluation under ``torchrun`` (one job: distribution).

Under ``torchrun`` (``WORLD_SIZE`` > 1) the runner gives batch ``j`` to rank ``j % world_size``
(gloo on CPU, nccl on GPU); in a single process every helper here is a no-op.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)``: from the initialised process group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: str | None) -> str | None:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1; return this rank's device.

    gloo on CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK`` when no index is given).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return device
    cuda = device is not None and device.startswith("cuda")
    if device is not None and cuda and ":" not in device:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=24))
    return device


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a no-op in a single process)."""
    if dist_info()[1] == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if dist_info()[1] > 1:
        torch.distributed.barrier()
