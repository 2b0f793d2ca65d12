"""HunyuanVideo-I2V's latent mask: one channel, latent frame 0 = pixel frame 0, latent frame t >= 1 covers pixel
frames 4t-3..4t and is kept only if all four are kept.

Used as the last input channel: diffusers' ``HunyuanVideoImageToVideoPipeline`` feeds
``cat([noisy, image_latents, mask])`` with the mask 1 on latent frame 0 and 0 after it, which is this packing of
the ``i2v`` preset (tests/test_hunyuan_infer.py checks the result).
"""

from __future__ import annotations

import torch

from models.packing import check_keep_mask, pool_spatial


def pack_hunyuan(
    m: torch.Tensor, vae_scale_spatial: int = 8, vae_scale_temporal: int = 4, mode: str = "min"
) -> torch.Tensor:
    """[1, T, H, W] -> [1, T_lat, H/8, W/8]; a later latent frame is kept only if all its pixel frames are."""
    T, _, _ = check_keep_mask(m, vae_scale_spatial, vae_scale_temporal)
    lat = pool_spatial(m, vae_scale_spatial, mode)
    h, w = lat.shape[-2:]
    rest = lat[:, 1:].reshape(1, (T - 1) // vae_scale_temporal, vae_scale_temporal, h, w).amin(dim=2)
    return torch.cat([lat[:, 0:1], rest], dim=1)
