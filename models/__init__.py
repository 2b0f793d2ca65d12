"""Model adapters: the contract (base.py) and one file per model family, plus weight layouts and LoRA key formats.

`make_adapter(cfg.model, device)` is how the entry points get an adapter; a family registers itself in
`ADAPTERS` by the name `model.type` uses.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from config.errors import UserError

if TYPE_CHECKING:  # config and the heavy model imports stay lazy: `import models` must be cheap
    from config.schema import ModelConfig
    from models.base import ModelAdapter

#: model.type -> "module:class" of its adapter
ADAPTERS = {"wan": "models.wan:WanAdapter", "hunyuan_video": "models.hunyuan_video:HunyuanVideoAdapter"}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
           "float8": torch.float8_e4m3fn, "float8_e4m3fn": torch.float8_e4m3fn}


def dtype_from_name(name: str | torch.dtype) -> torch.dtype:
    """Config dtype strings ("float32", "bfloat16", "float16", "float8" = e4m3fn) -> torch dtypes."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(_DTYPES)}") from None


def detect_family(path: str | os.PathLike) -> str | None:
    """The `model.type` a weights folder holds, from its marker files (None: not recognised)."""
    from models.hunyuan_layouts import ORIGINAL_MODEL_DIR
    from models.wan_layouts import ORIGINAL_VAE

    folder = Path(path)
    index = folder / "model_index.json"
    if index.is_file():
        try:
            name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
        except (OSError, ValueError, AttributeError):
            return None
        return "hunyuan_video" if name.startswith("HunyuanVideo") else "wan" if name.startswith("Wan") else None
    if (folder / ORIGINAL_MODEL_DIR).is_dir():
        return "hunyuan_video"
    if (folder / ORIGINAL_VAE).is_file():
        return "wan"
    return None


def make_adapter(model_cfg: ModelConfig, device: torch.device | str) -> ModelAdapter:
    """The adapter of `model_cfg.type`, with the config's weights and dtypes, computing on `device`.

    `dtype` is the compute dtype; `transformer_dtype` the storage dtype of the frozen transformer ("" = dtype).
    "float8" stores the transformer in float8_e4m3fn and computes in `dtype` (layerwise casting); every
    dtype here computes on CPU too (PyTorch 2.x has CPU kernels for bf16 and fp16 matmuls).
    """
    if model_cfg.type not in ADAPTERS:
        raise ValueError(f"unknown model.type {model_cfg.type!r}; valid: {', '.join(ADAPTERS)}")
    found = detect_family(model_cfg.ckpt_path) if model_cfg.ckpt_path else None
    if found and found != model_cfg.type:
        raise UserError(f"{model_cfg.ckpt_path}: holds a {found!r} model but model.type = {model_cfg.type!r}; "
                        f"set model.type = \"{found}\"")
    module, cls = ADAPTERS[model_cfg.type].split(":")
    adapter_cls = getattr(importlib.import_module(module), cls)
    dtype = dtype_from_name(model_cfg.dtype)
    storage = dtype_from_name(model_cfg.transformer_dtype) if model_cfg.transformer_dtype else dtype
    return adapter_cls(model_cfg.ckpt_path, model_cfg.transformer_path or None, device=device, dtype=dtype,
                       transformer_dtype=storage)
