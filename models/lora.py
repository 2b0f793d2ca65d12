"""LoRA on a loaded transformer, for every model family: add, read, load (from any layout) and save.

Inside the project a LoRA is a PEFT adapter on the diffusers transformer (`transformer.add_adapter`), and
its weights a PEFT state dict (`blocks.0.attn1.to_q.lora_A.weight`, ...). The file layouts users load
(ComfyUI/original, diffusers, musubi) belong to the family: `_FAMILIES` maps the transformer class to its
key-format module (Wan2.1: `models.lora_formats`) and to the function naming its base model for metadata.

Loading one or several LoRAs for inference (`load_lora_weights_into` with distinct adapter names) keeps each
as its own adapter with its own ranks and alphas, strength folded into its up-projection, so they stack.
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from peft import LoraConfig
from torch import nn

#: transformer class name -> (LoRA key-format module, "module:function" naming the base model from its config)
_FAMILIES = {"WanTransformer3DModel": ("models.lora_formats", "models.wan:base_model_name"),
             "HunyuanVideoTransformer3DModel": ("models.hunyuan_lora", "models.hunyuan_video:base_model_name")}
#: config model.type -> its LoRA key-format module (to check LoRA files before any model loads)
_FORMATS_BY_TYPE = {"wan": "models.lora_formats", "hunyuan_video": "models.hunyuan_lora"}


def lora_formats_for(model_type: str) -> ModuleType:
    """The LoRA key-format module of a config's `model.type` (`load_lora`, `save_lora`, `FORMATS`, ...)."""
    return importlib.import_module(_FORMATS_BY_TYPE[model_type])


def _family(transformer: nn.Module) -> tuple[ModuleType, Callable]:
    name = type(transformer).__name__
    if name not in _FAMILIES:
        raise TypeError(f"no LoRA key format is registered for {name}; add it to models.lora._FAMILIES")
    formats, namer = _FAMILIES[name]
    module, func = namer.split(":")
    return importlib.import_module(formats), getattr(importlib.import_module(module), func)


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    from models import dtype_from_name

    return dtype_from_name(dtype)


def base_model_of(transformer: nn.Module) -> str:
    """The base-model name LoRA metadata records for this transformer (e.g. "wan2.1-i2v-14b")."""
    return _family(transformer)[1](transformer.config)


def add_lora(transformer: nn.Module, target_modules: Iterable[str], rank: int, alpha: float, dropout: float = 0.0,
             dtype: str | torch.dtype = torch.float32, adapter_name: str = "default") -> list[nn.Parameter]:
    """Add a trainable PEFT LoRA (B = 0, so the model is unchanged) and return its parameters.

    Every other parameter is frozen. The LoRA weights are kept in `dtype` (float32 by default: the optimizer
    updates are tiny next to bf16's resolution). Call this after float8 storage is enabled, so layerwise casting
    never touches these weights, and before block offload, so they are created on the compute device.
    """
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        init_lora_weights=True)
    transformer.add_adapter(config, adapter_name)
    dtype = _dtype(dtype)
    params = []
    for name, p in transformer.named_parameters():
        if ".lora_" in name and f".{adapter_name}." in name:
            p.data = p.data.to(dtype)
            p.requires_grad_(True)
            params.append(p)
        else:
            p.requires_grad_(False)
    return params


def lora_state_dict(transformer: nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's weights as a PEFT dict (`blocks.0.attn1.to_q.lora_A.weight`), detached, on CPU."""
    tag = f".{adapter_name}.weight"
    return {n.replace(tag, ".weight"): p.detach().cpu() for n, p in transformer.named_parameters()
            if ".lora_" in n and n.endswith(tag)}


@dataclass
class LoadReport:
    """What `load_lora_weights_into` did: modules loaded, and file keys that matched nothing (not loaded)."""

    adapter_name: str
    modules: int
    unmatched: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


def _read(transformer: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]
          ) -> tuple[dict[str, torch.Tensor], dict[str, float], dict[str, str], str]:
    formats, namer = _family(transformer)
    if isinstance(source, Mapping):
        peft_sd, alphas = formats.to_peft(source)
        metadata, label = {}, "LoRA state dict"
    else:
        peft_sd, alphas, metadata = formats.load_lora(source, expected_base_model=namer(transformer.config))
        label = str(source)
    formats.check_fits(peft_sd, transformer)  # modules the model does not have, or other shapes: an error
    return peft_sd, alphas, metadata, label


def _pairs(peft_sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    modules = {k.rsplit(".lora_", 1)[0] for k in peft_sd}
    return {m: (peft_sd[f"{m}.lora_A.weight"], peft_sd[f"{m}.lora_B.weight"]) for m in sorted(modules)}


def _new_adapter(transformer: nn.Module, pairs: Mapping[str, tuple], adapter_name: str) -> None:
    """A frozen adapter shaped like the file: its modules only, its ranks (the most common one + exceptions)."""
    ranks = {m: int(a.shape[0]) for m, (a, _) in pairs.items()}
    rank = Counter(ranks.values()).most_common(1)[0][0]
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted(pairs),
                        rank_pattern={f"^{re.escape(m)}$": r for m, r in ranks.items() if r != rank})
    grads = {n: p.requires_grad for n, p in transformer.named_parameters()}
    active = list(transformer.active_adapters()) if getattr(transformer, "_hf_peft_config_loaded", False) else []
    with warnings.catch_warnings():  # peft warns that a second adapter is being added: that is the point here
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        transformer.add_adapter(config, adapter_name)
    # Stack with the adapters already active; strength is folded into the weights, so every scale stays 1.
    transformer.set_adapters([*active, adapter_name], [1.0] * (len(active) + 1))
    for n, p in transformer.named_parameters():  # peft marks active adapters trainable: restore
        p.requires_grad_(grads.get(n, False))


def load_lora_weights_into(transformer: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor],
                           weight: float = 1.0, adapter_name: str = "default") -> LoadReport:
    """Load a LoRA (a file in any supported layout, or a dict in one) into adapter `adapter_name`.

    If the transformer already has that adapter (training with `adapter.init_from_existing`), the file's
    weights are copied into it: ranks must match, alphas are converted (the effective update equals the
    file's). Otherwise a new frozen adapter shaped like the file is added and stacked with the active ones
    (inference; one name per file). `weight` scales the LoRA's update. File keys that match no module of the
    adapter are reported (warning + `LoadReport.unmatched`), never silently dropped; keys that match no module
    of the model at all, or a LoRA for another base model, are an error.
    """
    formats, _ = _family(transformer)
    peft_sd, alphas, metadata, label = _read(transformer, source)
    pairs = _pairs(peft_sd)
    if adapter_name not in (getattr(transformer, "peft_config", None) or {}):
        _new_adapter(transformer, pairs, adapter_name)
    modules = dict(transformer.named_modules())
    unmatched: list[str] = []
    loaded = 0
    with torch.no_grad():
        for name, (a, b) in pairs.items():
            layer = modules.get(name)
            if layer is None or adapter_name not in getattr(layer, "lora_A", {}):
                unmatched += [f"{name}.lora_A.weight", f"{name}.lora_B.weight"]
                continue
            la, lb = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
            if la.shape != a.shape or lb.shape != b.shape:
                raise formats.LoraFormatError(
                    f"{label}: {name} has rank {a.shape[0]}, the adapter rank {la.shape[0]}; set adapter.rank to "
                    "the file's rank to start from it")
            # Effective update: weight * (alpha / rank)_file * B A == scaling_adapter * B' A.
            factor = weight * alphas.get(name, a.shape[0]) / a.shape[0] / layer.scaling[adapter_name]
            la.copy_(a.to(la.dtype))
            lb.copy_((b.double() * factor).to(lb.dtype))
            loaded += 1
    if unmatched:
        warnings.warn(f"{label}: {len(unmatched)} LoRA keys match no module of adapter '{adapter_name}' and were "
                      f"not loaded: {', '.join(unmatched[:6])}{' ...' if len(unmatched) > 6 else ''}", stacklevel=2)
    return LoadReport(adapter_name, loaded, unmatched, metadata)


def save_lora_state(path: str | os.PathLike, state: Mapping[str, torch.Tensor], transformer: nn.Module, *,
                    fmt: str = "comfyui", rank: int, alpha: float, trigger: str = "", config_toml: str = "",
                    base_model: str | None = None) -> Path:
    """Write a PEFT dict (e.g. gathered from pipeline stages) in the family's file layout `fmt`, with rank,
    alpha, base model (from the transformer's config unless given), trigger and config in its metadata."""
    formats, namer = _family(transformer)
    return formats.save_lora(path, dict(state), fmt=fmt, rank=rank, alpha=alpha,
                             base_model=base_model or namer(transformer.config), trigger=trigger,
                             config_toml=config_toml)


def save_trained_lora(path: str | os.PathLike, transformer: nn.Module, fmt: str = "comfyui", *, rank: int,
                      alpha: float, base_model: str | None = None, trigger: str = "", config_toml: str = "",
                      adapter_name: str = "default") -> Path:
    """Save the transformer's adapter `adapter_name` (see `save_lora_state`)."""
    return save_lora_state(path, lora_state_dict(transformer, adapter_name), transformer, fmt=fmt, rank=rank,
                           alpha=alpha, trigger=trigger, config_toml=config_toml, base_model=base_model)
