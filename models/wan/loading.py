"""Find and load each Wan component from the weight layouts users download.

Layouts (see README "Model weights"): the diffusers folder, the original release folder (converted on
load with diffusers' converters and `models.wan.layouts`), and a single-file transformer override.
Each component loads on its own so encoders can be freed before the transformer is loaded; every layout gives
the same modules in the same dtypes (models.loading).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import AutoTokenizer, CLIPVisionModel, CLIPVisionModelWithProjection, UMT5EncoderModel

from models.loading import CLIPImageProcessor, WeightsError, checked_paths, files_identity, model_from_state_dict
from models.wan import layouts as wan_layouts

# Files each component reads in the original layout (relative to the release folder), for cache identity.
_ORIGINAL_FILES = {
    "vae": [wan_layouts.ORIGINAL_VAE],
    "text_encoder": [wan_layouts.ORIGINAL_T5, wan_layouts.ORIGINAL_T5_TOKENIZER],
    "image_encoder": [wan_layouts.ORIGINAL_CLIP],
}
_DIFFUSERS_DIRS = {"vae": ["vae"], "text_encoder": ["text_encoder", "tokenizer"],
                   "image_encoder": ["image_encoder", "image_processor"], "transformer": ["transformer"]}


class WanWeights:
    """Where each Wan component lives, and how to load it in a given dtype."""

    def __init__(self, ckpt_path: str | Path, transformer_path: str | Path | None = None) -> None:
        self.root, self.transformer_file = checked_paths(ckpt_path, transformer_path)
        try:
            self.layout = wan_layouts.detect_layout(self.root)
            if self.transformer_file is not None:
                wan_layouts.detect_layout(self.transformer_file)
        except ValueError as e:
            raise WeightsError(str(e)) from None
        if self.layout == "single-file":
            raise WeightsError(
                f"{self.root}: a single transformer file cannot be model.ckpt_path (the VAE and encoders are "
                "missing); set model.ckpt_path to a diffusers or original Wan folder and "
                "model.transformer_path to this file"
            )

    # -- helpers ----------------------------------------------------------------------------------
    def _diffusers(self, sub: str) -> Path:
        return self.root / sub

    def _component_roots(self, component: str | None) -> list[Path]:
        """The files and folders `component` reads (everything when None)."""
        if component is None:
            roots = [self.root] + ([self.transformer_file] if self.transformer_file is not None else [])
        elif component == "transformer" and self.transformer_file is not None:
            roots = [self.transformer_file]
        elif self.layout == "diffusers":
            roots = [self.root / d for d in _DIFFUSERS_DIRS[component]]
        elif component == "transformer":
            roots = [p for p in self.root.iterdir() if p.name.startswith("diffusion_pytorch_model")]
            roots.append(self.root / wan_layouts.ORIGINAL_CONFIG)
        else:
            roots = [self.root / f for f in _ORIGINAL_FILES[component]]
        return roots

    def identity(self, component: str | None = None) -> str:
        """Names, sizes and mtimes of the files `component` reads (all files when None).

        Cheap, and it changes when any of those files is replaced; per component, so swapping the transformer
        does not invalidate cached text embeddings.
        """
        return files_identity(self._component_roots(component))

    def transformer_config(self) -> dict:
        if self.layout == "diffusers":
            cfg = dict(WanTransformer3DModel.load_config(self._diffusers("transformer")))
        else:
            cfg = wan_layouts.wan_transformer_config_from_original(self.root / wan_layouts.ORIGINAL_CONFIG)
        if cfg.get("in_channels") != 36 or not cfg.get("image_dim"):
            raise WeightsError(
                f"{self.root}: not a Wan2.1 I2V transformer (in_channels {cfg.get('in_channels')}, image_dim "
                f"{cfg.get('image_dim')}; I2V has 36 and 1280): a text-to-video or other variant?")
        return cfg

    def vae_scale_factors(self) -> tuple[int, int]:
        """(temporal, spatial) compression of the VAE, read without loading it."""
        if self.layout == "diffusers":
            cfg = AutoencoderKLWan.load_config(self._diffusers("vae"))
            return cfg.get("scale_factor_temporal", 4), cfg.get("scale_factor_spatial", 8)
        return 4, 8  # Wan2.1_VAE.pth: the only original Wan2.1 VAE

    # -- components -------------------------------------------------------------------------------
    def transformer(self, dtype: torch.dtype) -> WanTransformer3DModel:
        """The transformer in `dtype` (its float32-kept modules in float32, as `from_pretrained` does)."""
        cfg = self.transformer_config()
        if self.transformer_file is None and self.layout == "diffusers":
            return WanTransformer3DModel.from_pretrained(self._diffusers("transformer"), torch_dtype=dtype)
        if self.transformer_file is not None:
            # fp8 files become `dtype` here; fp8 *storage* is applied afterwards by the adapter (layerwise casting).
            state = wan_layouts.load_single_file_transformer_state_dict(self.transformer_file, upcast_fp8=dtype)
        else:
            state = wan_layouts.load_original_transformer_state_dict(self.root)
        origin = self.transformer_file or self.root
        return model_from_state_dict(WanTransformer3DModel, cfg, state, dtype, origin)

    def vae(self, dtype: torch.dtype) -> AutoencoderKLWan:
        if self.layout == "diffusers":
            return AutoencoderKLWan.from_pretrained(self._diffusers("vae"), torch_dtype=dtype)
        path = self.root / wan_layouts.ORIGINAL_VAE
        state = wan_layouts.load_original_vae_state_dict(path)
        config = wan_layouts.wan_vae_config_from_state_dict(state)
        return model_from_state_dict(AutoencoderKLWan, config, state, dtype, path)

    def text_encoder(self, dtype: torch.dtype) -> UMT5EncoderModel:
        if self.layout == "diffusers":
            return UMT5EncoderModel.from_pretrained(self._diffusers("text_encoder"), dtype=dtype)
        return wan_layouts.load_original_t5(self.root, dtype)

    def tokenizer(self):
        if self.layout == "diffusers":
            return AutoTokenizer.from_pretrained(self._diffusers("tokenizer"))
        return AutoTokenizer.from_pretrained(self.root / wan_layouts.ORIGINAL_T5_TOKENIZER)

    def image_encoder(self, dtype: torch.dtype) -> CLIPVisionModel | CLIPVisionModelWithProjection | None:
        if self.layout == "diffusers":
            sub = self._diffusers("image_encoder")
            if not sub.exists():
                return None
            # The class the folder was saved as, so every key (visual_projection too) is used and none reported.
            arch = json.loads((sub / "config.json").read_text()).get("architectures") or []
            cls = CLIPVisionModelWithProjection if "CLIPVisionModelWithProjection" in arch else CLIPVisionModel
            return cls.from_pretrained(sub, dtype=dtype)
        return wan_layouts.load_original_clip_vision(self.root, dtype)

    def image_processor(self) -> CLIPImageProcessor:
        if self.layout == "diffusers":
            return CLIPImageProcessor.from_pretrained(self._diffusers("image_processor"))
        return wan_layouts.original_clip_image_processor(self.root)
