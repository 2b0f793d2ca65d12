"""The encode cache: tensors computed once per job, stored as safetensors, keyed by what they depend on.

A key is a hash of the inputs (tensor bytes, prompt text), the weights' identity and the settings that
change the result (dtype, packing mode). A changed input therefore misses only its own entry; stale
entries are harmless and can be deleted with the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
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

    def get(self, kind: str, key: str, compute: Callable[[], dict[str, torch.Tensor]],
            check: Callable[[dict[str, torch.Tensor]], str | None] | None = None) -> dict[str, torch.Tensor]:
        """Load the entry, or compute, store (atomically) and return it. `check(entry)` says what is wrong with a
        loaded entry (None: nothing); a torn, foreign or wrong entry is recomputed, with a warning naming it."""
        path = self.path(kind, key)
        if path.exists():
            try:
                out = load_file(path)
                problem = check(out) if check else None
            except (SafetensorError, OSError, ValueError) as e:  # a torn or foreign file
                out, problem = None, f"not a readable safetensors file ({e})"
            if problem is None:
                self.hits += 1
                return out
            warnings.warn(f"encode cache entry {path}: {problem}; recomputing it", stacklevel=2)
            path.unlink(missing_ok=True)
        self.misses += 1
        tensors = {k: v.detach().cpu().contiguous() for k, v in compute().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp)
        return tensors


def expect_shape(name: str, shape: tuple[int | None, ...]) -> Callable[[dict[str, torch.Tensor]], str | None]:
    """A `check` for `EncodeCache.get`: the entry has tensor `name` of `shape` (None: any size on that axis)."""
    def check(entry: dict[str, torch.Tensor]) -> str | None:
        if name not in entry:
            return f"has no tensor '{name}' (has {sorted(entry)})"
        got = tuple(entry[name].shape)
        if len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got)):
            want = "x".join("?" if w is None else str(w) for w in shape)
            return f"'{name}' has shape {'x'.join(map(str, got)) or 'scalar'}, expected {want}"
        return None

    return check
