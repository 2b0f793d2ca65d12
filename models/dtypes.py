"""Config dtype names -> torch dtypes."""

from __future__ import annotations

import torch

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
