"""The planner's model: the full-size transformer of a job, built from its config with no weights.

The config comes from the weight folder when `model.ckpt_path` exists (the same reader training uses),
else from a known variant: `--variant NAME`, or a variant name recognised in the path's last part
(`/models/Wan2.1-I2V-14B-480P-Diffusers` -> `wan2.1-i2v-14b-480p`). The transformer is built under a
`torch.device("meta")` (shapes and dtypes, no data), cast the way the loader casts it, float8 storage and LoRA
applied exactly as train.py applies them, and wrapped in the family's own adapter so `layers()` and
`first_layer_input` are the ones training runs.

A model family plugs in with one `models.planning.PlanFamily` in its folder (models/<family>/plan.py, named by its
registry record): its transformer class, its variants and the shapes of its cached inputs (latents, condition
channels, text, image features) for a frame count and size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from config.errors import UserError
from config.schema import Config
from models.family import resolve
from models.planning import InputShapes, PlanFamily, Variant
from models.registry import family as family_spec
from models.registry import names as family_names


def planner(family: str) -> PlanFamily:
    """The family's planner entry (models/<family>/plan.py)."""
    return family_spec(family).planner()


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
        return planner(self.family).shapes(self.transformer, self.compression, frames, height, width)

    @property
    def blocks(self) -> int:
        """Every repeated block (what block swap can offload)."""
        return sum(int(self.transformer[k]) for k in planner(self.family).block_keys)

    @property
    def last_blocks(self) -> int:
        """The blocks of the last kind (composed plans vary their count)."""
        return int(self.transformer[planner(self.family).block_keys[-1]])

    def with_blocks(self, n: int) -> ModelSpec:
        """The same model with n blocks of the last kind (figures of the full depth are composed from these)."""
        return replace(self, transformer={**self.transformer, planner(self.family).block_keys[-1]: n})


def _guess_variant(text: str, variants: dict[str, Variant]) -> str | None:
    """A variant whose name's parts all appear in `text` (a path part), longest name first."""
    low = re.sub(r"[_\s]", "-", text.lower())
    for name in sorted(variants, key=len, reverse=True):
        if all(part in low for part in name.split("-")):
            return name
    return None


def resolve_model(cfg: Config, variant: str | None = None) -> ModelSpec:
    """The transformer config of the job: from the weight folder if it exists, else from a known variant."""
    if cfg.model.type not in family_names():
        raise UserError(f"--plan: no model family {cfg.model.type!r} (models/registry.py)")
    family = planner(cfg.model.type)
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
    from models.dtypes import dtype_from_name
    from models.loading import keep_fp32  # diffusers' rule for its float32-kept modules

    cls = resolve(planner(spec.family).transformer)
    dtype = dtype_from_name(cfg.model.dtype)
    storage = dtype_from_name(cfg.model.transformer_dtype) if cfg.model.transformer_dtype else dtype
    with torch.device("meta"):
        model = cls.from_config(spec.transformer)
    keep = getattr(cls, "_keep_in_fp32_modules", None)
    for name, p in model.named_parameters():
        p.data = p.data.to(torch.float32 if keep_fp32(name, keep) else dtype)
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
        return resolve(planner(spec.family).vae).from_config(spec.vae).eval()


def weightless_adapter(spec: ModelSpec, model: nn.Module, cfg: Config):  # noqa: ANN201 (a ModelAdapter)
    """The family's adapter around `model`, without touching any weight file (`ModelAdapter.without_weights`)."""
    from models.dtypes import dtype_from_name

    cls = family_spec(spec.family).adapter_class()
    return cls.without_weights(model, dtype_from_name(cfg.model.dtype), spec.compression)


def job_size(cfg: Config, spec: ModelSpec) -> tuple[int, int, int]:
    """(frames, height, width) of the job's window (a long job's: data.window); unset sizes take the family's
    landscape default."""
    w0, h0 = family_spec(spec.family).default_size
    return cfg.data.window or cfg.data.frames, cfg.data.height or h0, cfg.data.width or w0
