"""Process-group setup for one process (`python train.py`) or many (`deepspeed train.py`, hostfiles).

DeepSpeed's launcher sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; a plain
`python train.py` gets the same variables for a world of one, so there is a single code path.
CPU-only machines use the gloo backend (DS_ACCELERATOR=cpu), GPUs use nccl.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    # Bind on all interfaces, as the rendezvous store does: a port free only on 127.0.0.1 is no use.
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def setup() -> Dist:
    """Initialise torch.distributed through DeepSpeed; returns this process's place and device."""
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    alone = "RANK" not in os.environ  # a plain `python train.py`: a world of one
    if alone:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    import deepspeed  # imported late: DS_ACCELERATOR must be set first

    for attempt in range(5):
        if torch.distributed.is_initialized():
            break
        if alone:
            os.environ["MASTER_PORT"] = str(_free_port())
        try:
            deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
        except RuntimeError as e:
            # The free port we picked can be taken by another program before the store binds it.
            if not alone or "address already in use" not in str(e).lower() or attempt == 4:
                raise
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(), local, device)


def broadcast(obj: Any, src: int = 0) -> Any:
    """The object of rank `src`, on every rank."""
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def gather_dicts(local: dict, dst: int = 0) -> dict | None:
    """Merge every rank's dict on rank `dst` (None elsewhere); tensors travel on CPU."""
    local = {k: v.detach().cpu() for k, v in local.items()}
    world = torch.distributed.get_world_size()
    out = [None] * world if torch.distributed.get_rank() == dst else None
    torch.distributed.gather_object(local, out, dst=dst)
    if out is None:
        return None
    merged: dict = {}
    for part in out:
        merged.update(part)
    return merged


def world_size_from_env() -> int:
    """The number of processes the launcher started (1 for a plain `python train.py`), before any setup."""
    return int(os.environ.get("WORLD_SIZE", "1"))
