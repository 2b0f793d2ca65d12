"""Find and load each HunyuanVideo-I2V component from the weight layouts users download.

Layouts (models.hunyuan_video.layouts): the diffusers folder (hunyuanvideo-community/HunyuanVideo-I2V-33ch), Tencent's
original `ckpts` folder (transformer `.pt` converted on load, read with `weights_only=True`), and a single-file
transformer override. Only the 33-channel `latent_concat` transformer is accepted: the 16-channel
`token_replace` variant has no mask channel (see `check_variant`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPTextModel, LlavaForConditionalGeneration

from models.hunyuan_video import layouts as hl
from models.loading import CLIPImageProcessor, WeightsError, checked_paths, files_identity, model_from_state_dict

_DIFFUSERS_DIRS = {"vae": ["vae"], "text_encoder": ["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
                                                    "image_processor"],
                   "image_encoder": [], "transformer": ["transformer"]}
_ORIGINAL_PATHS = {"vae": [f"{hl.ORIGINAL_MODEL_DIR}/vae"],
                   "text_encoder": [hl.ORIGINAL_TEXT_ENCODER, hl.ORIGINAL_TEXT_ENCODER_2], "image_encoder": [],
                   "transformer": [f"{hl.ORIGINAL_MODEL_DIR}/{hl.ORIGINAL_TRANSFORMER}"]}


def check_variant(config: dict, origin: Path | str) -> None:
    """Refuse every transformer but the 33-channel latent_concat one, saying why."""
    kind, channels = config.get("image_condition_type"), config.get("in_channels")
    if kind == "token_replace" or channels == 16:
        raise WeightsError(
            f"{origin}: this is the 16-channel 'token_replace' HunyuanVideo-I2V transformer. It has no mask input "
            "channel (the image replaces the first latent frame's tokens), so it cannot be told which regions of "
            "the video to keep, which LoRA-Edit's mask-aware conditioning needs. Use the 33-channel "
            "'latent_concat' model (diffusers: hunyuanvideo-community/HunyuanVideo-I2V-33ch).")
    if kind != "latent_concat" or channels != 33:
        raise WeightsError(f"{origin}: not a HunyuanVideo-I2V latent_concat transformer (image_condition_type "
                           f"{kind!r}, in_channels {channels}; expected 'latent_concat' and 33)")


def _load_pt(path: Path) -> dict[str, torch.Tensor]:
    try:
        return hl.unwrap_checkpoint(torch.load(path, map_location="cpu", weights_only=True))
    except FileNotFoundError:
        raise WeightsError(f"missing weights file {path}") from None


class HunyuanWeights:
    """Where each HunyuanVideo-I2V component lives, and how to load it in a given dtype."""

    def __init__(self, ckpt_path: str | Path, transformer_path: str | Path | None = None) -> None:
        self.root, self.transformer_file = checked_paths(ckpt_path, transformer_path)
        try:
            self.layout = hl.detect_layout(self.root)
        except ValueError as e:
            raise WeightsError(str(e)) from None
        if self.layout == "single-file":
            raise WeightsError(f"{self.root}: a single transformer file cannot be model.ckpt_path (the VAE and text "
                               "encoders are missing); set model.ckpt_path to a diffusers or original folder and "
                               "model.transformer_path to this file")
        self._missing()
        self._state: dict[str, torch.Tensor] | None = None  # original/single-file transformer, read once

    def _missing(self) -> None:
        table = _DIFFUSERS_DIRS if self.layout == "diffusers" else _ORIGINAL_PATHS
        skip = "transformer" if self.transformer_file is not None else None  # overridden: need not be there
        need = [self.root / p for component, ps in table.items() if component != skip for p in ps]
        if self.layout == "original":
            need.append(self.root / hl.ORIGINAL_MODEL_DIR / hl.ORIGINAL_VAE)
        if missing := [str(p) for p in need if not p.exists()]:
            raise WeightsError(f"{self.root}: incomplete HunyuanVideo-I2V {self.layout} folder, missing: "
                               + ", ".join(missing))

    def identity(self, component: str | None = None) -> str:
        """Names, sizes and mtimes of the files `component` reads (all when None), hashed."""
        if component is None:
            roots = [self.root] + ([self.transformer_file] if self.transformer_file else [])
        elif component == "transformer" and self.transformer_file is not None:
            roots = [self.transformer_file]
        else:
            table = _DIFFUSERS_DIRS if self.layout == "diffusers" else _ORIGINAL_PATHS
            roots = [self.root / p for p in table[component]]
        return files_identity(roots)

    # -- transformer ------------------------------------------------------------------------------
    def _original_state(self) -> dict[str, torch.Tensor]:
        if self._state is None:
            if self.transformer_file is not None:
                f = self.transformer_file
                state = load_file(str(f)) if f.suffix == ".safetensors" else _load_pt(f)
            else:
                state = _load_pt(self.root / hl.ORIGINAL_MODEL_DIR / hl.ORIGINAL_TRANSFORMER)
            self._state = hl.strip_prefix(state)
        return self._state

    def _original_shapes(self) -> dict[str, torch.Tensor]:
        """Key -> tensor (shape only, on the meta device, for a safetensors file: nothing is read)."""
        f = self.transformer_file
        if f is not None and f.suffix == ".safetensors" and self._state is None:
            with safe_open(str(f), framework="pt") as sf:
                return hl.strip_prefix({k: torch.empty(sf.get_slice(k).get_shape(), device="meta") for k in sf.keys()})
        return self._original_state()

    def cheap_to_check(self) -> bool:
        """Whether `transformer_config` can run without reading the transformer's weights."""
        return self.transformer_file is None and self.layout == "diffusers" or (
            self.transformer_file is not None and self.transformer_file.suffix == ".safetensors")

    def transformer_config(self) -> dict:
        if self.transformer_file is None and self.layout == "diffusers":
            cfg = dict(HunyuanVideoTransformer3DModel.load_config(self.root / "transformer"))
            origin = self.root / "transformer"
        else:
            state = self._original_shapes()
            if "img_in.proj.weight" not in state:
                raise WeightsError(f"{self.transformer_file or self.root}: not a HunyuanVideo transformer "
                                   f"(keys such as {', '.join(list(state)[:3])})")
            cfg = hl.original_transformer_config(state)
            origin = self.transformer_file or self.root
        check_variant(cfg, origin)
        return cfg

    def transformer(self, dtype: torch.dtype) -> HunyuanVideoTransformer3DModel:
        cfg = self.transformer_config()
        if self.transformer_file is None and self.layout == "diffusers":
            return HunyuanVideoTransformer3DModel.from_pretrained(self.root / "transformer", torch_dtype=dtype)
        hidden = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        state = {k: v.float() if v.dtype == torch.float8_e4m3fn else v for k, v in self._original_state().items()}
        self._state = None  # converted below; not kept twice
        converted = hl.transformer_original_to_diffusers(state, hidden)
        keys = {k for k in cfg if not k.startswith("_")}
        config = {k: v for k, v in cfg.items() if k in keys}
        return model_from_state_dict(HunyuanVideoTransformer3DModel, config, converted, dtype,
                                self.transformer_file or self.root)

    # -- VAE and encoders -------------------------------------------------------------------------
    def vae_config(self) -> dict:
        if self.layout == "diffusers":
            return dict(AutoencoderKLHunyuanVideo.load_config(self.root / "vae"))
        path = self.root / hl.ORIGINAL_MODEL_DIR / hl.ORIGINAL_VAE_CONFIG
        return hl.vae_config_from_original(json.loads(path.read_text()))

    def vae_scale_factors(self) -> tuple[int, int]:
        cfg = self.vae_config()
        return cfg.get("temporal_compression_ratio", 4), cfg.get("spatial_compression_ratio", 8)

    def vae(self, dtype: torch.dtype) -> AutoencoderKLHunyuanVideo:
        if self.layout == "diffusers":
            return AutoencoderKLHunyuanVideo.from_pretrained(self.root / "vae", torch_dtype=dtype)
        path = self.root / hl.ORIGINAL_MODEL_DIR / hl.ORIGINAL_VAE
        state = hl.strip_prefix({k.removeprefix("vae."): v for k, v in _load_pt(path).items()})
        return model_from_state_dict(AutoencoderKLHunyuanVideo, self.vae_config(), state, dtype, path)

    def _dir(self, diffusers_sub: str, original_sub: str) -> Path:
        return self.root / (diffusers_sub if self.layout == "diffusers" else original_sub)

    def text_encoder(self, dtype: torch.dtype) -> LlavaForConditionalGeneration:
        return LlavaForConditionalGeneration.from_pretrained(self._dir("text_encoder", hl.ORIGINAL_TEXT_ENCODER),
                                                             dtype=dtype)

    def tokenizer(self):
        return AutoTokenizer.from_pretrained(self._dir("tokenizer", hl.ORIGINAL_TEXT_ENCODER), padding_side="right")

    def text_encoder_2(self, dtype: torch.dtype) -> CLIPTextModel:
        return CLIPTextModel.from_pretrained(self._dir("text_encoder_2", hl.ORIGINAL_TEXT_ENCODER_2), dtype=dtype)

    def tokenizer_2(self):
        return AutoTokenizer.from_pretrained(self._dir("tokenizer_2", hl.ORIGINAL_TEXT_ENCODER_2))

    def image_processor(self) -> CLIPImageProcessor:
        return CLIPImageProcessor.from_pretrained(self._dir("image_processor", hl.ORIGINAL_TEXT_ENCODER))
