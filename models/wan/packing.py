"""Wan2.1/2.2 I2V's latent mask: the pooled keep mask as 4 channels per latent frame.

Identical layout to diffusers' ``WanImageToVideoPipeline.prepare_latents``: frame 0 repeated 4 times, then
regrouped so channel c of latent frame t is pixel frame max(0, 4t + c - 3).
"""

from __future__ import annotations

import torch

from models.packing import check_keep_mask, pool_spatial


def pack_wan(
    m: torch.Tensor, vae_scale_spatial: int = 8, vae_scale_temporal: int = 4, mode: str = "min"
) -> torch.Tensor:
    """[1, T, H, W] -> [vae_scale_temporal, T_lat, H/8, W/8] with T_lat = (T - 1) / 4 + 1."""
    check_keep_mask(m, vae_scale_spatial, vae_scale_temporal)
    lat = pool_spatial(m, vae_scale_spatial, mode)
    h, w = lat.shape[-2:]
    # Same ops as diffusers: repeat_interleave frame 0, view into groups of 4, transpose.
    first = torch.repeat_interleave(lat[:, 0:1], repeats=vae_scale_temporal, dim=1)
    lat = torch.cat([first, lat[:, 1:]], dim=1)  # [1, T + 3, h, w]
    lat = lat.reshape(-1, vae_scale_temporal, h, w)  # [T_lat, 4, h, w]
    return lat.transpose(0, 1).contiguous()
