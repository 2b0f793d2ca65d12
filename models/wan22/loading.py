"""Find and load each Wan2.2-I2V-A14B component: Wan2.1's loaders (models.wan.loading.WanWeights), per expert.

The VAE, umT5 and its tokenizer sit where Wan2.1's do in both folder layouts (`vae/`, `text_encoder/`, `tokenizer/`;
`Wan2.1_VAE.pth`, the umT5 `.pth`, `google/umt5-xxl/`), so those loaders are inherited as they are. What differs:
two transformers (one folder each, or one ComfyUI file each), and no image encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel

from models.family import Expert
from models.loading import WeightsError, files_identity, model_from_state_dict
from models.wan import layouts as wan_layouts
from models.wan.loading import WanWeights
from models.wan22 import layouts
from models.wan22.spec import EXPERTS

#: config keys naming each expert's single-file override (model.transformer_path, model.transformer_2_path)
FILE_KEYS = {"high_noise": "model.transformer_path", "low_noise": "model.transformer_2_path"}


class Wan22Weights(WanWeights):
    """Where each Wan2.2-I2V-A14B component lives; `expert_files` maps an expert name to its single-file override."""

    def __init__(self, ckpt_path: str | Path, expert_files: Mapping[str, str | Path] | None = None) -> None:
        self.root = Path(ckpt_path)
        if not self.root.exists():
            raise WeightsError(f"model.ckpt_path '{self.root}' does not exist")
        self.files = {name: Path(p) for name, p in (expert_files or {}).items() if p}
        try:
            self.layout = layouts.detect_layout(self.root)
            for name, path in self.files.items():
                if not path.is_file():
                    raise layouts.WeightLayoutError(f"{FILE_KEYS[name]} '{path}' is not a file")
                wan_layouts.detect_layout(path)  # a Wan transformer .safetensors (or a one-line reason why not)
        except ValueError as e:
            raise WeightsError(str(e)) from None
        # WanWeights' single-transformer override: none; each expert's file is in `self.files`.
        self.transformer_file = None

    # -- files ----------------------------------------------------------------------------------------
    def _expert_dir(self, expert: str) -> Path:
        dirs = layouts.DIFFUSERS_DIRS if self.layout == "diffusers" else layouts.ORIGINAL_DIRS
        return self.root / dirs[expert]

    def _component_roots(self, component: str | None) -> list[Path]:
        if component is None:
            return [self.root, *self.files.values()]
        if component == "image_encoder":
            return []  # no CLIP
        if component == "transformer" or component in layouts.DIFFUSERS_DIRS:
            names = [component] if component in layouts.DIFFUSERS_DIRS else [e.name for e in EXPERTS]
            return [self.files.get(n, self._expert_dir(n)) for n in names]
        return super()._component_roots(component)

    def identity(self, component: str | None = None) -> str:
        """As WanWeights' ("transformer": both experts; an expert's name: that one's files)."""
        return files_identity(self._component_roots(component))

    # -- transformers ---------------------------------------------------------------------------------
    def transformer_config(self, expert: str = "high_noise") -> dict:
        """The expert's WanTransformer3DModel config, checked to be a Wan2.2-I2V expert."""
        folder = self._expert_dir(expert)
        if self.layout == "diffusers":
            cfg = dict(WanTransformer3DModel.load_config(folder))
        else:
            cfg = layouts.original_transformer_config(folder)
        if cfg.get("in_channels") != layouts.IN_CHANNELS or cfg.get("image_dim"):
            raise WeightsError(
                f"{folder}: not a Wan2.2-I2V expert (in_channels {cfg.get('in_channels')}, image_dim "
                f"{cfg.get('image_dim')}; Wan2.2-I2V has 36 and none): a Wan2.1 or text-to-video model?")
        return cfg

    def expert_transformer(self, expert: Expert, dtype: torch.dtype) -> WanTransformer3DModel:
        """The expert's transformer in `dtype` (its float32-kept modules in float32, as `from_pretrained` does)."""
        cfg = self.transformer_config(expert.name)
        file = self.files.get(expert.name)
        if file is None and self.layout == "diffusers":
            return WanTransformer3DModel.from_pretrained(self._expert_dir(expert.name), torch_dtype=dtype)
        if file is not None:
            # fp8 files become `dtype` here; fp8 storage is applied afterwards by the adapter (layerwise casting).
            state = wan_layouts.load_single_file_transformer_state_dict(file, upcast_fp8=dtype)
        else:
            state = layouts.load_original_transformer_state_dict(self._expert_dir(expert.name))
        return model_from_state_dict(WanTransformer3DModel, cfg, state, dtype, file or self._expert_dir(expert.name))

    def transformer(self, dtype: torch.dtype) -> WanTransformer3DModel:
        raise TypeError("Wan2.2-I2V-A14B has two transformers: use expert_transformer(expert, dtype)")

    def image_encoder(self, dtype: torch.dtype) -> None:
        del dtype
        return None

    def image_processor(self) -> None:
        return None
