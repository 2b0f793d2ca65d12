"""Weight-loading helpers every family uses: path checks, the file identity cache keys depend on, building a
diffusers model from a state dict with diffusers' own dtype rules, and the quiet import of the CLIP processor.

Every layout a family reads gives the same module in the same dtypes: diffusers' `from_pretrained` keeps the
model's `_keep_in_fp32_modules` (norms, modulation tables, the time embedder) in float32 whatever `torch_dtype`
says, so the state-dict paths cast the same way before handing the weights to diffusers (which would otherwise
cast everything and warn about it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from accelerate import init_empty_weights
from torch import nn

from config.errors import UserError

try:  # transformers 5 without torchvision: the PIL processor (same config file), no fallback warning
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # transformers 4
    from transformers import CLIPImageProcessor

__all__ = ["CLIPImageProcessor", "WeightsError", "checked_paths", "damaged_safetensors", "files_identity", "keep_fp32",
           "model_from_state_dict", "quiet_logger"]


class WeightsError(UserError):
    """Weights that are missing, incomplete or of an unrecognised layout."""


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise one logger's level for the duration of a call whose warnings are known not to apply."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def checked_paths(ckpt_path: str | Path, transformer_path: str | Path | None) -> tuple[Path, Path | None]:
    """model.ckpt_path (must exist) and the optional model.transformer_path (must be a file) as Paths."""
    root = Path(ckpt_path)
    transformer_file = Path(transformer_path) if transformer_path else None
    if not root.exists():
        raise WeightsError(f"model.ckpt_path '{root}' does not exist")
    if transformer_file is not None and not transformer_file.is_file():
        raise WeightsError(f"model.transformer_path '{transformer_file}' is not a file")
    return root, transformer_file


def damaged_safetensors(roots: Iterable[Path]) -> tuple[Path, str] | None:
    """The first `.safetensors` file under `roots` whose header does not open or does not cover the file (a torn
    download, a truncated copy), with the reason; None when all open. Reads headers only."""
    from safetensors import SafetensorError, safe_open

    files = [f for r in roots if r.exists() for f in ([r] if r.is_file() else sorted(r.rglob("*.safetensors")))]
    for f in files:
        if f.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(f), framework="pt"):  # opening reads and checks the header
                pass
        except (SafetensorError, OSError) as e:
            return f, str(e)
    return None


def files_identity(roots: Iterable[Path]) -> str:
    """Names, sizes and mtimes of every file in `roots` (files or folders), hashed: cheap, and it changes when
    any of them is replaced."""
    files = [f for r in roots for f in ([r] if r.is_file() else sorted(r.rglob("*"))) if f.is_file()]
    items = [(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in files]
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def keep_fp32(name: str, keep: list[str] | None) -> bool:
    """diffusers' rule (load_model_dict_into_meta): a parameter stays float32 when a dotted part of its name is
    one of the model's `_keep_in_fp32_modules`."""
    return bool(keep) and any(k in name.split(".") for k in keep)


def model_from_state_dict(cls: type, config: dict, state: dict, dtype: torch.dtype, origin: Path) -> nn.Module:
    """Build `cls(**config)` without random init and assign a diffusers-keyed state dict, strictly.

    Dtypes are set tensor by tensor as `from_pretrained` sets them (`_keep_in_fp32_modules` in float32, the
    rest in `dtype`). diffusers' `from_single_file` cannot do that: it casts the whole model with `.to()` (and
    warns), or without `torch_dtype` keeps float32. Buffers (rotary tables) are built as usual, on CPU.
    """
    keep = cls._keep_in_fp32_modules
    state = {k: v.to(torch.float32 if keep_fp32(k, keep) else dtype) if v.is_floating_point() else v
             for k, v in state.items()}
    with init_empty_weights(include_buffers=False):
        model = cls.from_config(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:  # lists every missing / unexpected key and shape mismatch
        raise WeightsError(f"{origin}: weights do not fit {cls.__name__}: {e}") from None
    return model.eval()
