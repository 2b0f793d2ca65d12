"""Model adapters: the contract (base.py) and one file per model family, plus weight layouts and LoRA key formats.

`make_adapter(cfg.model, device)` is how the entry points get an adapter; a family registers itself in
`ADAPTERS` by the name `model.type` uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # config and the heavy model imports stay lazy: `import models` must be cheap
    from config.schema import ModelConfig
    from models.base import ModelAdapter

#: model.type -> "module:class" of its adapter
ADAPTERS = {"wan": "models.wan:WanAdapter"}

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


def make_adapter(model_cfg: ModelConfig, device: torch.device | str) -> ModelAdapter:
    """The adapter of `model_cfg.type`, with the config's weights and dtypes, computing on `device`.

    `dtype` is the compute dtype; `transformer_dtype` the storage dtype of the frozen transformer ("" = dtype).
    "float8" stores the transformer in float8_e4m3fn and computes in `dtype` (layerwise casting); every
    dtype here computes on CPU too (PyTorch 2.x has CPU kernels for bf16 and fp16 matmuls).
    """
    if model_cfg.type not in ADAPTERS:
        raise ValueError(f"unknown model.type {model_cfg.type!r}; valid: {', '.join(ADAPTERS)}")
    module, cls = ADAPTERS[model_cfg.type].split(":")
    adapter_cls = getattr(importlib.import_module(module), cls)
    dtype = dtype_from_name(model_cfg.dtype)
    storage = dtype_from_name(model_cfg.transformer_dtype) if model_cfg.transformer_dtype else dtype
    return adapter_cls(model_cfg.ckpt_path, model_cfg.transformer_path or None, device=device, dtype=dtype,
                       transformer_dtype=storage)
