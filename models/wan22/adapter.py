"""Wan2.2-I2V-A14B on diffusers' Wan classes: Wan2.1-I2V's adapter (models.wan.adapter) with two experts, no CLIP.

Each expert is a WanTransformer3DModel with Wan2.1-I2V's 36-channel input (16 noisy + 4 mask + 16 condition
latents) and no image cross-attention, so the conditioning, the mask packing, the layer list and `predict` are
Wan2.1's unchanged: `encode_image` gives None and the transformers get no image tokens, exactly as diffusers'
WanImageToVideoPipeline runs them for a transformer whose `image_dim` is None.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel
from torch import nn

from models.family import Expert
from models.wan.adapter import WanAdapter
from models.wan22.loading import Wan22Weights

_SIZES = {5120: "a14b"}  # hidden size -> the released model


class Wan22Adapter(WanAdapter):
    family = "wan2.2-i2v-a14b"

    def open_weights(self, ckpt_path: str | Path, transformer_path: str | Path | Mapping | None) -> Wan22Weights:
        """`transformer_path`: {expert name: single file} (models.registry.make_adapter builds it from
        model.transformer_path and model.transformer_2_path); a bare path is the first (high-noise) expert's."""
        if transformer_path is not None and not isinstance(transformer_path, Mapping):
            transformer_path = {self.experts()[0].name: transformer_path}
        return Wan22Weights(ckpt_path, transformer_path)

    def build_transformer(self, expert: Expert) -> WanTransformer3DModel:
        return self.weights.expert_transformer(expert, self.dtype)

    def base_model_name(self) -> str:
        """"wan2.2-i2v-a14b" (a size never released: "wan2.2-i2v-custom-<hidden size>", e.g. tiny test models)."""
        cfg = self.weights.transformer_config()
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        return f"wan2.2-i2v-{_SIZES.get(dim, f'custom-{dim}')}"

    def load_image_encoder(self) -> nn.Module | None:
        return None  # no CLIP: the experts have no image cross-attention

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor | None:
        del images
        return None

    def lora_target_modules(self, train_image_kv: bool = False) -> list[str]:
        del train_image_kv  # there is no image cross-attention to train
        return super().lora_target_modules(False)
