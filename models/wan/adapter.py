"""Wan2.1-I2V on diffusers' Wan classes.

Conditioning follows the reference pipeline (`WanImageToVideoPipeline`) exactly: text from UMT5 padded
to 512 tokens (the attention processor splits image from text tokens by assuming 512), image features
from CLIP vision's penultimate layer, `y` = VAE posterior mode of V_condition normalized with the VAE's
latents_mean/std, a 4-channel packed mask, and the transformer input `cat([noisy, mask4, y])`.
The only difference from the pipeline is that V_condition and M_condition come from the sample
builder (so the mask can keep more than frame 0): with the `i2v` preset the tensors are identical.

Dtypes: `dtype` is the compute dtype of the transformer and the text encoder; `transformer_dtype` the
storage dtype of the frozen transformer weights. When they differ (float8 storage, typically) diffusers'
layerwise casting stores each linear in `transformer_dtype` and casts it to `dtype` for its forward. It is
applied when the transformer loads, before LoRA is added, so LoRA weights are never cast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from PIL import Image
from torch import nn

from models.base import BlockLayer, Conditioning, ModelAdapter
from models.family import Expert
from models.loading import quiet_logger
from models.wan.loading import WanWeights
from models.wan.packing import pack_wan

# Without torchvision, diffusers' Wan pipeline module asks transformers for `CLIPImageProcessor`, which then
# falls back to `CLIPImageProcessorPil` with a warning. That PIL class is the one we load anyway (models.loading).
with quiet_logger("transformers.utils.import_utils"):
    from diffusers import WanImageToVideoPipeline

TEXT_LEN = 512  # Wan's attention processor hard-codes the text context length
_SIZES = {1536: "1.3b", 5120: "14b"}  # hidden size -> Wan2.1 model size


def base_model_name(config: Mapping[str, Any]) -> str:
    """"wan2.1-i2v-14b" from a WanTransformer3DModel config; sizes that were never released read
    "wan2.1-i2v-custom-<hidden size>" (tiny test models), which no size check can confuse with a real one."""
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    variant = "flf2v" if config.get("pos_embed_seq_len") else "i2v" if config.get("image_dim") else "t2v"
    return f"wan2.1-{variant}-{_SIZES.get(dim, f'custom-{dim}')}"


class WanAdapter(ModelAdapter):
    family = "wan"

    def open_weights(self, ckpt_path: str | Path, transformer_path: str | Path | None) -> WanWeights:
        return WanWeights(ckpt_path, transformer_path)

    # -- components -------------------------------------------------------------------------------
    def load_vae(self) -> AutoencoderKLWan:
        return self._get("vae", lambda: self.weights.vae(self.vae_dtype).to(self.device).eval())

    def load_text_encoder(self) -> nn.Module:
        return self._get("text_encoder", lambda: self.weights.text_encoder(self.dtype).to(self.device).eval())

    def load_image_encoder(self) -> nn.Module | None:
        return self._get("image_encoder", lambda: self.weights.image_encoder(torch.float32).to(self.device).eval())

    def build_transformer(self, expert: Expert) -> WanTransformer3DModel:
        del expert  # one transformer
        return self.weights.transformer(self.dtype)

    def base_model_name(self) -> str:
        return base_model_name(self.weights.transformer_config())

    def _pipeline(self) -> WanImageToVideoPipeline:
        # The pipeline object only lends its prompt/image encoding so that ours is the reference's, exactly.
        return WanImageToVideoPipeline(
            tokenizer=self.components.get("tokenizer"), text_encoder=self.components.get("text_encoder"), vae=None,
            scheduler=None, image_processor=self.components.get("image_processor"),
            image_encoder=self.components.get("image_encoder"),
        )

    # -- encoders ---------------------------------------------------------------------------------
    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.load_vae().config
        mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(like.device, like.dtype)
        inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(like.device, like.dtype)
        return mean, inv_std

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._latent_stats(z)
        return (z - mean) * inv_std

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._latent_stats(latents)
        return latents / inv_std + mean

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        self.load_text_encoder()
        self._get("tokenizer", self.weights.tokenizer)
        embeds, _ = self._pipeline().encode_prompt(
            prompts, do_classifier_free_guidance=False, max_sequence_length=TEXT_LEN, device=self.device
        )
        return embeds

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor | None:
        if self.load_image_encoder() is None:
            return None
        self._get("image_processor", self.weights.image_processor)
        # The pipeline hands the CLIP processor a uint8 PIL image, which it resizes in uint8: do the same (frames
        # of the sample builder are uint8 / 127.5 - 1, so this recovers their bytes exactly).
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        pil = [Image.fromarray(p.numpy()) for p in pixels]
        return self._pipeline().encode_image(pil, device=self.device)

    # -- conditioning -----------------------------------------------------------------------------
    def pack_mask(self, m_condition: torch.Tensor, mode: str = "min") -> torch.Tensor:
        return pack_wan(m_condition, self.spatial_compression, self.temporal_compression, mode=mode)

    def condition_channels(self, packed_mask: torch.Tensor, cond_latents: torch.Tensor) -> torch.Tensor:
        return torch.cat([packed_mask.to(cond_latents), cond_latents], dim=1)

    def transformer_input(self, noisy: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.cat([noisy, cond.to(noisy)], dim=1)

    def model_kwargs(self, model_input: torch.Tensor, c: Conditioning) -> dict:
        return {"encoder_hidden_states_image": None if c.image is None else c.image.to(self.device, self.dtype)}

    # -- layers -----------------------------------------------------------------------------------
    def layers(self, expert: str | None = None) -> list[nn.Module]:
        model = self.load_transformer(expert=expert)
        return [WanEmbedLayer(model), *(WanBlockLayer(b) for b in model.blocks), WanHeadLayer(model)]

    def first_layer_input(self, model_input: torch.Tensor, timestep: torch.Tensor, c: Conditioning) -> tuple:
        dev, dtype = self.device, self.dtype
        image = torch.empty(0, device=dev) if c.image is None else c.image.to(dev, dtype)
        return (model_input.to(dev, dtype), timestep.to(dev), c.text.to(dev, dtype), image)

    def lora_target_modules(self, train_image_kv: bool = False) -> list[str]:
        names = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                 "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"]
        if train_image_kv:
            names += ["attn2.add_k_proj", "attn2.add_v_proj"]
        return names  # peft matches list entries as module-name suffixes; only blocks have these


class WanEmbedLayer(nn.Module):
    """Patch embedding, rotary table and time/text/image embedders: the model's prologue."""

    def __init__(self, model: WanTransformer3DModel) -> None:
        super().__init__()
        self.rope, self.patch_embedding, self.condition_embedder = (
            model.rope, model.patch_embedding, model.condition_embedder)
        self.patch_size = model.config.patch_size

    def forward(self, inputs: tuple) -> tuple:
        x, timestep, text, image = inputs
        b, _, f, h, w = x.shape
        cos, sin = self.rope(x)
        hidden = self.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        temb, tproj, text, image = self.condition_embedder(timestep, text, image if image.numel() else None)
        tproj = tproj.unflatten(1, (6, -1))
        if image is not None:
            text = torch.cat([image, text], dim=1)
        pt, ph, pw = self.patch_size
        grid = torch.tensor([b, f // pt, h // ph, w // pw], device=x.device)
        return hidden, text, tproj, temb, cos, sin, grid


class WanBlockLayer(BlockLayer):
    """One transformer block, tuple in, tuple out."""

    passthrough = (1, 2, 3, 4, 5, 6)

    def run(self, inputs: tuple) -> tuple:
        hidden, text, tproj, temb, cos, sin, grid = inputs
        hidden = self.block(hidden, text, tproj, (cos, sin))
        return hidden, text, tproj, temb, cos, sin, grid


class WanHeadLayer(nn.Module):
    """Output norm, projection and unpatchify: the model's epilogue."""

    def __init__(self, model: WanTransformer3DModel) -> None:
        super().__init__()
        self.norm_out, self.proj_out, self.scale_shift_table = model.norm_out, model.proj_out, model.scale_shift_table
        self.patch_size = model.config.patch_size

    def forward(self, inputs: tuple) -> torch.Tensor:
        hidden, _, _, temb, _, _, grid = inputs
        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden = (self.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
        hidden = self.proj_out(hidden)
        b, f, h, w = (int(v) for v in grid)
        pt, ph, pw = self.patch_size
        hidden = hidden.reshape(b, f, h, w, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return hidden.flatten(6, 7).flatten(4, 5).flatten(2, 3)

