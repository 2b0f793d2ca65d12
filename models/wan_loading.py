"""Find and load each Wan component from the weight layouts users download.

Layouts (see README "Model weights"): the diffusers folder, the original release folder (converted on
load with diffusers' converters and `models.wan_layouts`), and a single-file transformer override.
Each component loads on its own so encoders can be freed before the transformer is loaded.

Every layout gives the same module in the same dtypes: diffusers' `from_pretrained` keeps the model's
`_keep_in_fp32_modules` (norms, modulation tables, the time embedder) in float32 whatever `torch_dtype`
says, so the state-dict paths cast the same way before handing the weights to diffusers (which would
otherwise cast everything and warn about it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from torch import nn
from transformers import AutoTokenizer, CLIPVisionModel, CLIPVisionModelWithProjection, UMT5EncoderModel

from config.errors import UserError
from models import wan_layouts

try:  # transformers 5 without torchvision: the PIL processor (same config file), no fallback warning
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # transformers 4
    from transformers import CLIPImageProcessor


class WeightsError(UserError):
    """Weights that are missing, incomplete or of an unrecognised layout."""


# Files each component reads in the original layout (relative to the release folder), for cache identity.
_ORIGINAL_FILES = {
    "vae": [wan_layouts.ORIGINAL_VAE],
    "text_encoder": [wan_layouts.ORIGINAL_T5, wan_layouts.ORIGINAL_T5_TOKENIZER],
    "image_encoder": [wan_layouts.ORIGINAL_CLIP],
}
_DIFFUSERS_DIRS = {"vae": ["vae"], "text_encoder": ["text_encoder", "tokenizer"],
                   "image_encoder": ["image_encoder", "image_processor"], "transformer": ["transformer"]}


def checked_paths(ckpt_path: str | Path, transformer_path: str | Path | None) -> tuple[Path, Path | None]:
    """model.ckpt_path (must exist) and the optional model.transformer_path (must be a file) as Paths."""
    root = Path(ckpt_path)
    transformer_file = Path(transformer_path) if transformer_path else None
    if not root.exists():
        raise WeightsError(f"model.ckpt_path '{root}' does not exist")
    if transformer_file is not None and not transformer_file.is_file():
        raise WeightsError(f"model.transformer_path '{transformer_file}' is not a file")
    return root, transformer_file


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

    def _component_files(self, component: str | None) -> list[Path]:
        if component is None:
            roots = [self.root]
        elif component == "transformer" and self.transformer_file is not None:
            roots = [self.transformer_file]
        elif self.layout == "diffusers":
            roots = [self.root / d for d in _DIFFUSERS_DIRS[component]]
        elif component == "transformer":
            roots = [p for p in self.root.iterdir() if p.name.startswith("diffusion_pytorch_model")]
            roots.append(self.root / wan_layouts.ORIGINAL_CONFIG)
        else:
            roots = [self.root / f for f in _ORIGINAL_FILES[component]]
        files = [f for r in roots for f in ([r] if r.is_file() else sorted(r.rglob("*"))) if f.is_file()]
        if component is None and self.transformer_file is not None:
            files.append(self.transformer_file)
        return files

    def identity(self, component: str | None = None) -> str:
        """Names, sizes and mtimes of the files `component` reads (all files when None).

        Cheap, and it changes when any of those files is replaced; per component, so swapping the transformer
        does not invalidate cached text embeddings.
        """
        items = [(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in self._component_files(component)]
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]

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
        return _from_state_dict(WanTransformer3DModel, cfg, state, dtype, origin)

    def vae(self, dtype: torch.dtype) -> AutoencoderKLWan:
        if self.layout == "diffusers":
            return AutoencoderKLWan.from_pretrained(self._diffusers("vae"), torch_dtype=dtype)
        path = self.root / wan_layouts.ORIGINAL_VAE
        state = wan_layouts.load_original_vae_state_dict(path)
        return _from_state_dict(AutoencoderKLWan, wan_layouts.wan_vae_config_from_state_dict(state), state, dtype, path)

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


def _keep_fp32(name: str, keep: list[str] | None) -> bool:
    # diffusers' rule (load_model_dict_into_meta): a dotted part of the name is one of the listed modules.
    return bool(keep) and any(k in name.split(".") for k in keep)


def _from_state_dict(cls: type, config: dict, state: dict, dtype: torch.dtype, origin: Path) -> nn.Module:
    """Build `cls(**config)` without random init and assign a diffusers-keyed state dict, strictly.

    Dtypes are set tensor by tensor as `from_pretrained` sets them (`_keep_in_fp32_modules` in float32, the
    rest in `dtype`). diffusers' `from_single_file` cannot do that: it casts the whole model with `.to()` (and
    warns), or without `torch_dtype` keeps float32. Buffers (rotary tables) are built as usual, on CPU.
    """
    keep = cls._keep_in_fp32_modules
    state = {k: v.to(torch.float32 if _keep_fp32(k, keep) else dtype) if v.is_floating_point() else v
             for k, v in state.items()}
    with init_empty_weights(include_buffers=False):
        model = cls.from_config(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:  # lists every missing / unexpected key and shape mismatch
        raise WeightsError(f"{origin}: weights do not fit {cls.__name__}: {e}") from None
    return model.eval()
