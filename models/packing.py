"""Pack a pixel-space keep mask (1 = preserve, 0 = generate) onto a model's latent grid: what every family shares.

Spatial downsampling to (H/8, W/8), `pool_spatial`:
* "min" (default): a latent cell is kept only if every pixel in its 8x8 block is kept, so no
  generated pixel can leak into a kept cell.
* "nearest": torch's nearest interpolation, i.e. the top-left pixel (8i, 8j) of each block decides.

How the pooled frames become the model's mask channels is the family's (models/<family>/packing.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_keep_mask(m: torch.Tensor, s: int, t: int) -> tuple[int, int, int]:
    """(T, H, W) of a keep mask [1, T, H, W] whose frame count is tk+1 and whose size the VAE factor s divides."""
    if m.ndim != 4 or m.shape[0] != 1:
        raise ValueError(f"keep mask must be [1, T, H, W], got shape {tuple(m.shape)}")
    T, H, W = m.shape[1:]
    if T < 1 or (T - 1) % t:
        raise ValueError(f"frame count must be {t}k+1, got {T}")
    if H % s or W % s:
        raise ValueError(f"mask size {W}x{H} is not a multiple of the VAE's spatial factor {s}")
    return T, H, W


def pool_spatial(m: torch.Tensor, s: int, mode: str) -> torch.Tensor:
    """[1, T, H, W] -> [1, T, H/s, W/s]."""
    _, T, H, W = m.shape
    if not m.is_floating_point():
        m = m.float()
    if mode == "min":
        return m.reshape(1, T, H // s, s, W // s, s).amin(dim=(3, 5))
    if mode == "nearest":
        return F.interpolate(m.float(), size=(H // s, W // s), mode="nearest").to(m.dtype)
    raise ValueError(f"mode must be 'min' or 'nearest', got {mode!r}")
