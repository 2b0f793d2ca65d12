"""The encode cache: tensors computed once per job, stored as safetensors, keyed by what they depend on.

A key is a hash of the inputs (tensor bytes, prompt text), the weights' identity and the settings that
change the result (dtype, packing mode). A changed input therefore misses only its own entry; stale
entries are harmless and can be deleted with the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from config.atomic import atomic_path
from config.errors import UserError


def fingerprint(*parts: object) -> str:
    """A stable hash of tensors, strings, numbers and nested lists/dicts of them."""
    h = hashlib.sha256()

    def feed(x: object) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            for k in sorted(x):
                feed(str(k))
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                feed(v)
            h.update(b"]")
        else:
            h.update(json.dumps(x, default=str).encode())
        h.update(b"|")

    for p in parts:
        feed(p)
    return h.hexdigest()[:32]


class EncodeCache:
    """A folder of `<kind>-<key>.safetensors` files; `hits` and `misses` count lookups."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cache folder '{self.folder}' cannot be created: {e.strerror}") from None
        if not os.access(self.folder, os.W_OK):
            raise UserError(f"cache folder '{self.folder}' is not writable")
        self.hits = 0
        self.misses = 0

    def path(self, kind: str, key: str) -> Path:
        return self.folder / f"{kind}-{key}.safetensors"

    def get(self, kind: str, key: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Load the entry, or compute, store (atomically) and return it."""
        path = self.path(kind, key)
        if path.exists():
            try:
                out = load_file(path)
                self.hits += 1
                return out
            except Exception:  # a torn or foreign file: recompute it
                path.unlink(missing_ok=True)
        self.misses += 1
        tensors = {k: v.detach().cpu().contiguous() for k, v in compute().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp)
        return tensors
