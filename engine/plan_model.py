"""The planner's model: the full-size transformer of a job, built from its config with no weights.

The config comes from the weight folder when `model.ckpt_path` exists (the same reader training uses),
else from a known variant: `--variant NAME`, or a variant name recognised in the path's last part
(`/models/Wan2.1-I2V-14B-480P-Diffusers` -> `wan2.1-i2v-14b-480p`). The transformer is built under a
`torch.device("meta")` (shapes and dtypes, no data), cast the way the loader casts it, float8 storage and LoRA
applied exactly as train.py applies them, and wrapped in the family's own adapter so `layers()` and
`first_layer_input` are the ones training runs.

A model family plugs in with one `PlanFamily` entry: its transformer class, its variants and the shapes of
its cached inputs (latents, condition channels, text, image features) for a frame count and size.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from config.errors import UserError
from config.schema import FAMILY_DEFAULTS, Config

_WAN14B = dict(patch_size=[1, 2, 2], num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
               text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120,
               rope_max_seq_len=1024)
# Encoder parameter counts (for the encode phase): umT5-XXL encoder, CLIP ViT-H/14 vision tower, Wan2.1 VAE.
_WAN21_ENCODERS = {"text_encoder": 5.68e9, "image_encoder": 0.632e9, "vae": 0.127e9}
# The Wan2.1 VAE (AutoencoderKLWan), traced for the encode and decode phases.
_WAN21_VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                  temperal_downsample=[False, True, True])


@dataclass(frozen=True)
class Variant:
    transformer: dict
    encoders: dict  # component -> parameter count
    vae_compression: tuple[int, int] = (4, 8)  # (time, space)
    note: str = ""
    vae: dict | None = None  # the VAE's config, to trace its encode and decode


WAN_VARIANTS = {
    "wan2.1-i2v-14b-480p": Variant(_WAN14B, _WAN21_ENCODERS, vae=_WAN21_VAE),
    "wan2.1-i2v-14b-720p": Variant(_WAN14B, _WAN21_ENCODERS, vae=_WAN21_VAE),
    "wan2.1-flf2v-14b-720p": Variant({**_WAN14B, "pos_embed_seq_len": 514}, _WAN21_ENCODERS, vae=_WAN21_VAE),
    # Two experts of this size (high / low noise); a training step runs one of them.
    "wan2.2-i2v-a14b": Variant({**_WAN14B, "image_dim": None, "added_kv_proj_dim": None},
                               {"text_encoder": 5.68e9, "vae": 0.127e9}, note="one of the two 14B experts per step",
                               vae=_WAN21_VAE),
    "wan2.2-ti2v-5b": Variant(dict(_WAN14B, num_attention_heads=24, ffn_dim=14336, num_layers=30, in_channels=48,
                                   out_channels=48, image_dim=None, added_kv_proj_dim=None),
                              {"text_encoder": 5.68e9, "vae": 0.7e9}, vae_compression=(4, 16)),
}


# HunyuanVideo-I2V, the 33-channel latent_concat model (diffusers' config of the released transformer).
_HUNYUAN_I2V = dict(in_channels=33, out_channels=16, num_attention_heads=24, attention_head_dim=128, num_layers=20,
                    num_single_layers=40, num_refiner_layers=2, mlp_ratio=4.0, patch_size=2, patch_size_t=1,
                    qk_norm="rms_norm", guidance_embeds=False, text_embed_dim=4096, pooled_projection_dim=768,
                    rope_theta=256.0, rope_axes_dim=[16, 56, 56], image_condition_type="latent_concat")
# LLaVA-Llama-3-8B (with its CLIP-L/336 vision tower), CLIP-L text, the HunyuanVideo VAE.
_HUNYUAN_ENCODERS = {"text_encoder": 8.4e9, "text_encoder_2": 0.123e9, "vae": 0.246e9}
HUNYUAN_VARIANTS = {"hunyuanvideo-i2v": Variant(_HUNYUAN_I2V, _HUNYUAN_ENCODERS,
                                                     note="text length assumed 256 prompt + 288 image tokens")}


@dataclass
class InputShapes:
    """Per-sample shapes of what the encode cache feeds the transformer (channel-first latents)."""

    latents: tuple[int, ...]
    cond: tuple[int, ...]
    text: tuple[int, ...]
    image: tuple[int, ...] | None
    tokens: int  # transformer tokens (latent cells / patch volume)
    text_mask: tuple[int, ...] | None = None  # families with a text mask / pooled embedding (HunyuanVideo)
    pooled: tuple[int, ...] | None = None


def _wan_shapes(config: dict, compression: tuple[int, int], frames: int, height: int, width: int) -> InputShapes:
    ct, cs = compression
    grid = ((frames - 1) // ct + 1, height // cs, width // cs)
    out, cin = config["out_channels"], config["in_channels"]
    image = (257 * (2 if config.get("pos_embed_seq_len") else 1), config["image_dim"]) if config.get("image_dim") \
        else None
    pt, ph, pw = config["patch_size"]
    tokens = grid[0] // pt * (grid[1] // ph) * (grid[2] // pw)
    return InputShapes((out, *grid), (cin - out, *grid), (512, config["text_dim"]), image, tokens)


def _hunyuan_shapes(config: dict, compression: tuple[int, int], frames: int, height: int, width: int) -> InputShapes:
    ct, cs = compression
    grid = ((frames - 1) // ct + 1, height // cs, width // cs)
    out, cin, p = config["out_channels"], config["in_channels"], config["patch_size"]
    text = 256 + 288  # the prompt (max_sequence_length) after the LLaVA image tokens, every second one kept
    tokens = grid[0] // config["patch_size_t"] * (grid[1] // p) * (grid[2] // p)
    return InputShapes((out, *grid), (cin - out, *grid), (text, config["text_embed_dim"]), None, tokens,
                       text_mask=(text,), pooled=(config["pooled_projection_dim"],))


def _hunyuan_folder_config(path: Path) -> tuple[dict, tuple[int, int], dict | None]:
    from models.hunyuan_loading import HunyuanWeights

    weights = HunyuanWeights(path)
    return weights.transformer_config(), weights.vae_scale_factors(), None


def _wan_folder_config(path: Path) -> tuple[dict, tuple[int, int], dict | None]:
    """(transformer config, VAE compression, VAE config) of a weight folder."""
    from models.wan_loading import WanWeights

    weights = WanWeights(path)
    vae = None
    if weights.layout == "diffusers":
        from diffusers import AutoencoderKLWan

        vae = {k: v for k, v in AutoencoderKLWan.load_config(path / "vae").items() if not k.startswith("_")}
    return weights.transformer_config(), weights.vae_scale_factors(), vae


@dataclass(frozen=True)
class PlanFamily:
    """What the planner needs of a model family (see the module doc)."""

    adapter: str  # "module:class" of the family's ModelAdapter
    transformer: str  # "module:class" of its transformer
    vae: str  # "module:class" of its VAE
    variants: dict[str, Variant]
    shapes: Callable[[dict, tuple[int, int], int, int, int], InputShapes]
    folder_config: Callable[[Path], tuple[dict, tuple[int, int], dict | None]]
    # Config keys of the repeated blocks' counts, in layer-list order. Block swap offloads the last blocks, and
    # composed plans vary the last count (the blocks before are kept as they are).
    block_keys: tuple[str, ...] = ("num_layers",)
    # Attributes the adapter's constructor would set besides device, dtype and compressions (it opens the
    # weight folder, so the planner does not call it).
    adapter_state: dict = field(default_factory=dict)


FAMILIES = {
    "wan": PlanFamily("models.wan:WanAdapter", "diffusers:WanTransformer3DModel", "diffusers:AutoencoderKLWan",
                      WAN_VARIANTS, _wan_shapes, _wan_folder_config),
    "hunyuan_video": PlanFamily("models.hunyuan_video:HunyuanVideoAdapter", "diffusers:HunyuanVideoTransformer3DModel",
                                "diffusers:AutoencoderKLHunyuanVideo", HUNYUAN_VARIANTS, _hunyuan_shapes,
                                _hunyuan_folder_config, ("num_layers", "num_single_layers"),
                                {"_config": None}),
}


def _load(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class ModelSpec:
    family: str
    name: str  # variant name, or the folder it was read from
    transformer: dict
    encoders: dict
    compression: tuple[int, int]
    note: str = ""
    vae: dict | None = None

    def shapes(self, frames: int, height: int, width: int) -> InputShapes:
        return FAMILIES[self.family].shapes(self.transformer, self.compression, frames, height, width)

    @property
    def blocks(self) -> int:
        """Every repeated block (what block swap can offload)."""
        return sum(int(self.transformer[k]) for k in FAMILIES[self.family].block_keys)

    @property
    def last_blocks(self) -> int:
        """The blocks of the last kind (composed plans vary their count)."""
        return int(self.transformer[FAMILIES[self.family].block_keys[-1]])

    def with_blocks(self, n: int) -> ModelSpec:
        """The same model with n blocks of the last kind (figures of the full depth are composed from these)."""
        return replace(self, transformer={**self.transformer, FAMILIES[self.family].block_keys[-1]: n})


def _guess_variant(text: str, variants: dict[str, Variant]) -> str | None:
    """A variant whose name's parts all appear in `text` (a path part), longest name first."""
    low = re.sub(r"[_\s]", "-", text.lower())
    for name in sorted(variants, key=len, reverse=True):
        if all(part in low for part in name.split("-")):
            return name
    return None


def resolve_model(cfg: Config, variant: str | None = None) -> ModelSpec:
    """The transformer config of the job: from the weight folder if it exists, else from a known variant."""
    family = FAMILIES.get(cfg.model.type)
    if family is None:
        raise UserError(f"--plan: no planner entry for model.type {cfg.model.type!r} (engine/plan_model.py)")
    known = ", ".join(family.variants)
    if variant:
        if variant not in family.variants:
            raise UserError(f"--variant {variant!r} is not a known {cfg.model.type} variant; known: {known}")
        v = family.variants[variant]
        return ModelSpec(cfg.model.type, variant, dict(v.transformer), v.encoders, v.vae_compression, v.note, v.vae)
    path = Path(cfg.model.ckpt_path) if cfg.model.ckpt_path else None
    if path is not None and path.exists():
        config, compression, vae = family.folder_config(path)
        guess = _guess_variant(path.name, family.variants) or ""
        encoders = family.variants[guess].encoders if guess else {}
        vae = vae or (family.variants[guess].vae if guess else None)
        return ModelSpec(cfg.model.type, str(path), dict(config), encoders, compression, vae=vae)
    guess = _guess_variant(path.name, family.variants) if path is not None else None
    if guess is None:
        where = f"model.ckpt_path '{path}' does not exist and names" if path else "model.ckpt_path is empty:"
        raise UserError(f"--plan: {where} no known variant; pass --variant NAME (one of: {known})")
    v = family.variants[guess]
    return ModelSpec(cfg.model.type, guess, dict(v.transformer), v.encoders, v.vae_compression, v.note, v.vae)


def build_transformer(spec: ModelSpec, cfg: Config) -> nn.Module:
    """The frozen transformer on the meta device, in train.py's dtypes and float8 storage (no LoRA yet)."""
    from models import dtype_from_name
    from models.wan_loading import _keep_fp32  # diffusers' rule for its float32-kept modules

    cls = _load(FAMILIES[spec.family].transformer)
    dtype = dtype_from_name(cfg.model.dtype)
    storage = dtype_from_name(cfg.model.transformer_dtype) if cfg.model.transformer_dtype else dtype
    with torch.device("meta"):
        model = cls.from_config(spec.transformer)
    keep = getattr(cls, "_keep_in_fp32_modules", None)
    for name, p in model.named_parameters():
        p.data = p.data.to(torch.float32 if _keep_fp32(name, keep) else dtype)
    if storage != dtype:
        model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=dtype)
    model.requires_grad_(False)
    return model


def add_training_lora(adapter, model: nn.Module, cfg: Config) -> list[nn.Parameter]:
    """LoRA as run_training adds it (on the meta device)."""
    from models.lora import add_lora

    a = cfg.adapter
    with torch.device("meta"):
        return add_lora(model, adapter.lora_target_modules(a.train_image_kv), a.rank, a.alpha or float(a.rank),
                        a.dropout, a.dtype)


def build_vae(spec: ModelSpec) -> nn.Module | None:
    """The family's VAE on the meta device, in float32 (as the adapters run it), or None if unknown."""
    if spec.vae is None:
        return None
    with torch.device("meta"):
        return _load(FAMILIES[spec.family].vae).from_config(spec.vae).eval()


def weightless_adapter(spec: ModelSpec, model: nn.Module, cfg: Config):
    """The family's adapter around `model`, without touching any weight file.

    The adapter's constructor opens the weight folder, so it is skipped: the base constructor sets device and
    dtype, and the transformer goes where `load_transformer` caches it (`components["transformer"]`).
    """
    from models import dtype_from_name
    from models.base import ModelAdapter

    cls = _load(FAMILIES[spec.family].adapter)
    adapter = cls.__new__(cls)
    ModelAdapter.__init__(adapter, "meta", dtype_from_name(cfg.model.dtype))
    adapter.transformer_dtype = next(p.dtype for p in model.parameters())
    adapter.temporal_compression, adapter.spatial_compression = spec.compression
    adapter.components["transformer"] = model
    for name, value in FAMILIES[spec.family].adapter_state.items():
        setattr(adapter, name, value)
    return adapter


def job_size(cfg: Config, spec: ModelSpec) -> tuple[int, int, int]:
    """(frames, height, width) of the job's window; unset sizes take the family's landscape default."""
    w0, h0 = FAMILY_DEFAULTS[spec.family].size
    return cfg.data.frames, cfg.data.height or h0, cfg.data.width or w0
