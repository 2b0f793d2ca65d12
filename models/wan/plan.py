"""Wan's entry for --plan: the released transformers' configs (variants), its cached inputs' shapes, and the
config reader of a weight folder (models.planning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.planning import InputShapes, PlanFamily, Variant

_WAN14B = dict(patch_size=[1, 2, 2], num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
               text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120,
               rope_max_seq_len=1024)
# Encoder parameter counts (for the encode phase): umT5-XXL encoder, CLIP ViT-H/14 vision tower, Wan2.1 VAE.
_WAN21_ENCODERS = {"text_encoder": 5.68e9, "image_encoder": 0.632e9, "vae": 0.127e9}
# The Wan2.1 VAE (AutoencoderKLWan), traced for the encode and decode phases.
_WAN21_VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                  temperal_downsample=[False, True, True])

VARIANTS = {
    "wan2.1-i2v-14b-480p": Variant(_WAN14B, _WAN21_ENCODERS, vae=_WAN21_VAE),
    "wan2.1-i2v-14b-720p": Variant(_WAN14B, _WAN21_ENCODERS, vae=_WAN21_VAE),
    "wan2.1-flf2v-14b-720p": Variant({**_WAN14B, "pos_embed_seq_len": 514}, _WAN21_ENCODERS, vae=_WAN21_VAE),
    # Wan2.2-I2V-A14B is its own family (models/wan22/plan.py).
    "wan2.2-ti2v-5b": Variant(dict(_WAN14B, num_attention_heads=24, ffn_dim=14336, num_layers=30, in_channels=48,
                                   out_channels=48, image_dim=None, added_kv_proj_dim=None),
                              {"text_encoder": 5.68e9, "vae": 0.7e9}, vae_compression=(4, 16)),
}



def input_shapes(config: dict, compression: tuple[int, int], frames: int, height: int, width: int) -> InputShapes:
    ct, cs = compression
    grid = ((frames - 1) // ct + 1, height // cs, width // cs)
    out, cin = config["out_channels"], config["in_channels"]
    image = (257 * (2 if config.get("pos_embed_seq_len") else 1), config["image_dim"]) if config.get("image_dim") \
        else None
    pt, ph, pw = config["patch_size"]
    tokens = grid[0] // pt * (grid[1] // ph) * (grid[2] // pw)
    return InputShapes((out, *grid), (cin - out, *grid), (512, config["text_dim"]), image, tokens)


def weights_config(weights: Any, path: Path) -> tuple[dict, tuple[int, int], dict | None]:
    """(transformer config, VAE compression, VAE config) of opened Wan weights (Wan2.1's or Wan2.2's) at `path`."""
    vae = None
    if weights.layout == "diffusers":
        from diffusers import AutoencoderKLWan

        vae = {k: v for k, v in AutoencoderKLWan.load_config(path / "vae").items() if not k.startswith("_")}
    return weights.transformer_config(), weights.vae_scale_factors(), vae


def folder_config(path: Path) -> tuple[dict, tuple[int, int], dict | None]:
    """(transformer config, VAE compression, VAE config) of a weight folder."""
    from models.wan.loading import WanWeights

    return weights_config(WanWeights(path), path)


PLAN = PlanFamily("diffusers:WanTransformer3DModel", "diffusers:AutoencoderKLWan", VARIANTS, input_shapes,
                  folder_config)
