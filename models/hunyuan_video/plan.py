"""HunyuanVideo-I2V's entry for --plan: the released 33-channel transformer's config, its cached inputs' shapes and
the config reader of a weight folder (models.planning)."""

from __future__ import annotations

from pathlib import Path

from models.planning import InputShapes, PlanFamily, Variant

# HunyuanVideo-I2V, the 33-channel latent_concat model (diffusers' config of the released transformer).
_HUNYUAN_I2V = dict(in_channels=33, out_channels=16, num_attention_heads=24, attention_head_dim=128, num_layers=20,
                    num_single_layers=40, num_refiner_layers=2, mlp_ratio=4.0, patch_size=2, patch_size_t=1,
                    qk_norm="rms_norm", guidance_embeds=False, text_embed_dim=4096, pooled_projection_dim=768,
                    rope_theta=256.0, rope_axes_dim=[16, 56, 56], image_condition_type="latent_concat")
# LLaVA-Llama-3-8B (with its CLIP-L/336 vision tower), CLIP-L text, the HunyuanVideo VAE.
_HUNYUAN_ENCODERS = {"text_encoder": 8.4e9, "text_encoder_2": 0.123e9, "vae": 0.246e9}
VARIANTS = {"hunyuanvideo-i2v": Variant(_HUNYUAN_I2V, _HUNYUAN_ENCODERS,
                                        note="text length assumed 256 prompt + 288 image tokens")}


def input_shapes(config: dict, compression: tuple[int, int], frames: int, height: int, width: int) -> InputShapes:
    ct, cs = compression
    grid = ((frames - 1) // ct + 1, height // cs, width // cs)
    out, cin, p = config["out_channels"], config["in_channels"], config["patch_size"]
    text = 256 + 288  # the prompt (max_sequence_length) after the LLaVA image tokens, every second one kept
    tokens = grid[0] // config["patch_size_t"] * (grid[1] // p) * (grid[2] // p)
    return InputShapes((out, *grid), (cin - out, *grid), (text, config["text_embed_dim"]), None, tokens,
                       text_mask=(text,), pooled=(config["pooled_projection_dim"],))


def folder_config(path: Path) -> tuple[dict, tuple[int, int], dict | None]:
    from models.hunyuan_video.loading import HunyuanWeights

    weights = HunyuanWeights(path)
    return weights.transformer_config(), weights.vae_scale_factors(), None


# Its double- and single-stream blocks, in layer-list order: block swap offloads the last ones.
PLAN = PlanFamily("diffusers:HunyuanVideoTransformer3DModel", "diffusers:AutoencoderKLHunyuanVideo", VARIANTS,
                  input_shapes, folder_config, ("num_layers", "num_single_layers"))
