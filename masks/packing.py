"""Pack a pixel-space keep mask (1 = preserve, 0 = generate) onto a model's latent grid.

Spatial downsampling to (H/8, W/8):
* "min" (default): a latent cell is kept only if every pixel in its 8x8 block is kept, so no
  generated pixel can leak into a kept cell.
* "nearest": torch's nearest interpolation, i.e. the top-left pixel (8i, 8j) of each block decides.

Wan2.1/2.2 I2V: identical layout to diffusers' ``WanImageToVideoPipeline.prepare_latents`` - frame 0
repeated 4 times, then regrouped so channel c of latent frame t is pixel frame max(0, 4t + c - 3).
HunyuanVideo-I2V: latent frame 0 = pixel frame 0, latent frame t >= 1 covers pixel frames 4t-3..4t
and is kept only if all four are kept. One channel, used as the last input channel: diffusers'
``HunyuanVideoImageToVideoPipeline`` feeds ``cat([noisy, image_latents, mask])`` with the mask 1 on latent frame 0
and 0 after it, which is this packing of the ``i2v`` preset (tests/test_hunyuan_infer.py checks the result).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(m: torch.Tensor, s: int, t: int) -> tuple[int, int, int]:
    if m.ndim != 4 or m.shape[0] != 1:
        raise ValueError(f"keep mask must be [1, T, H, W], got shape {tuple(m.shape)}")
    T, H, W = m.shape[1:]
    if T < 1 or (T - 1) % t:
        raise ValueError(f"frame count must be {t}k+1, got {T}")
    if H % s or W % s:
        raise ValueError(f"mask size {W}x{H} is not a multiple of the VAE's spatial factor {s}")
    return T, H, W


def _spatial(m: torch.Tensor, s: int, mode: str) -> torch.Tensor:
    """[1, T, H, W] -> [1, T, H/s, W/s]."""
    _, T, H, W = m.shape
    if not m.is_floating_point():
        m = m.float()
    if mode == "min":
        return m.reshape(1, T, H // s, s, W // s, s).amin(dim=(3, 5))
    if mode == "nearest":
        return F.interpolate(m.float(), size=(H // s, W // s), mode="nearest").to(m.dtype)
    raise ValueError(f"mode must be 'min' or 'nearest', got {mode!r}")


def pack_wan(
    m: torch.Tensor, vae_scale_spatial: int = 8, vae_scale_temporal: int = 4, mode: str = "min"
) -> torch.Tensor:
    """[1, T, H, W] -> [vae_scale_temporal, T_lat, H/8, W/8] with T_lat = (T - 1) / 4 + 1."""
    T, _, _ = _check(m, vae_scale_spatial, vae_scale_temporal)
    lat = _spatial(m, vae_scale_spatial, mode)
    h, w = lat.shape[-2:]
    # Same ops as diffusers: repeat_interleave frame 0, view into groups of 4, transpose.
    first = torch.repeat_interleave(lat[:, 0:1], repeats=vae_scale_temporal, dim=1)
    lat = torch.cat([first, lat[:, 1:]], dim=1)  # [1, T + 3, h, w]
    lat = lat.reshape(-1, vae_scale_temporal, h, w)  # [T_lat, 4, h, w]
    return lat.transpose(0, 1).contiguous()


def pack_hunyuan(
    m: torch.Tensor, vae_scale_spatial: int = 8, vae_scale_temporal: int = 4, mode: str = "min"
) -> torch.Tensor:
    """[1, T, H, W] -> [1, T_lat, H/8, W/8]; a later latent frame is kept only if all its pixel frames are."""
    T, _, _ = _check(m, vae_scale_spatial, vae_scale_temporal)
    lat = _spatial(m, vae_scale_spatial, mode)
    h, w = lat.shape[-2:]
    rest = lat[:, 1:].reshape(1, (T - 1) // vae_scale_temporal, vae_scale_temporal, h, w).amin(dim=2)
    return torch.cat([lat[:, 0:1], rest], dim=1)
