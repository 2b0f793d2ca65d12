"""Process-group setup for one process (`python train.py`) or many (`deepspeed train.py`, hostfiles).

DeepSpeed's launcher sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; a plain
`python train.py` is a world of one with a file rendezvous (no port), and the same code path after that.
CPU-only machines use the gloo backend (DS_ACCELERATOR=cpu), GPUs use nccl.

On the CPU accelerator DeepSpeed's communication backend JIT-builds a shared-memory op (deepspeed_shm_comm) on
every `init_distributed`, one process or many: DeepSpeed 0.19 has no switch to skip it. Torch keeps such builds in
one cache per user (~/.cache/torch_extensions/py311_cpu) whose build file names the building environment's include
paths, so two virtualenvs on one checkout (the quickstart's .venv and CI's) rebuilt it on every run, in turn. The
cache is therefore kept per Python environment (`extensions_dir`), unless TORCH_EXTENSIONS_DIR is set already.
(Training uses torch's own AdamW, so DeepSpeed's CPU Adam op is never built.)
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
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


def extensions_dir(prefix: str | None = None) -> Path:
    """This Python environment's own torch-extensions cache: the user's cache folder, one subfolder per
    environment (its name and a hash of its prefix), so another virtualenv never invalidates its builds."""
    prefix = prefix or sys.prefix
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = hashlib.sha1(str(Path(prefix).resolve()).encode()).hexdigest()[:10]
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache / "torch_extensions" / f"{py}-{Path(prefix).name}-{tag}"


def use_environment_extensions_dir() -> Path:
    """Point torch's JIT-extension cache at `extensions_dir()` unless the user chose one; returns the folder."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir()))
    return Path(os.environ["TORCH_EXTENSIONS_DIR"])


def setup() -> Dist:
    """Initialise torch.distributed through DeepSpeed; returns this process's place and device."""
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    use_environment_extensions_dir()  # before DeepSpeed's backend builds its CPU op
    # A plain `python train.py`: a world of one. Only LOCAL_RANK (which DeepSpeed's engine reads) goes into
    # os.environ: child processes, such as a test's train.py runs, must not inherit a rendezvous.
    alone = "RANK" not in os.environ
    if alone:
        os.environ.setdefault("LOCAL_RANK", "0")
    import deepspeed  # imported late: DS_ACCELERATOR must be set first

    if not torch.distributed.is_initialized():
        backend = "nccl" if cuda else "gloo"
        if alone:
            # A file rendezvous needs no TCP port: a port picked as free can still be taken (TIME_WAIT,
            # other programs) by the time the store binds it.
            store = Path(tempfile.gettempdir()) / f"lora-edit-rendezvous-{os.getpid()}-{time.time_ns()}"
            deepspeed.init_distributed(dist_backend=backend, init_method=f"file://{store}", rank=0, world_size=1,
                                       auto_mpi_discovery=False,
                                       verbose=False)
        else:
            deepspeed.init_distributed(dist_backend=backend, verbose=False)
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
