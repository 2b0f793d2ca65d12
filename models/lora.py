"""LoRA on a loaded transformer, for every model family: add, read, load (from any layout) and save.

Inside the project a LoRA is a PEFT adapter on the diffusers transformer (`transformer.add_adapter`), and
its weights a PEFT state dict (`blocks.0.attn1.to_q.lora_A.weight`, ...). The file layouts users load
(ComfyUI/original, diffusers, musubi) belong to the family: the adapter that loads a transformer binds it to its
family's key formats, base-model name and expert (`bind`, `LoraFiles`), so a transformer's LoRA files are read
and written in its family's layouts whichever family it is (two families may share a transformer class).

Loading one or several LoRAs for inference (`load_lora_weights_into` with distinct adapter names) keeps each
as its own adapter with its own ranks and alphas, strength folded into its up-projection, so they stack.
A family with several experts has one LoRA file per expert (`lora_expert` tells which expert a file is for).
"""

from __future__ import annotations

import os
import re
import warnings
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from peft import LoraConfig
from torch import nn

from models.dtypes import dtype_from_name
from models.family import Expert
from models.lora_files import LoraFormatError


@dataclass(frozen=True)
class LoraFiles:
    """What a transformer's LoRA files look like: its family's key formats module (`to_peft`, `load_lora`,
    `save_lora`, `check_fits`, `FORMATS`), the base model its metadata names, and the expert it is."""

    formats: ModuleType
    base_model: str
    expert: Expert = field(default_factory=Expert)


_BOUND: weakref.WeakKeyDictionary[nn.Module, LoraFiles] = weakref.WeakKeyDictionary()


def bind(transformer: nn.Module, files: LoraFiles) -> None:
    """Record `transformer`'s LoRA file layout (models.base.ModelAdapter.load_transformer does it)."""
    _BOUND[transformer] = files


def files_of(transformer: nn.Module) -> LoraFiles:
    try:
        return _BOUND[transformer]
    except KeyError:
        raise TypeError(f"this {type(transformer).__name__} was not loaded by a model adapter, so its LoRA file "
                        "layout is unknown (models.base.ModelAdapter.load_transformer binds it)") from None


def base_model_of(transformer: nn.Module) -> str:
    """The base-model name LoRA metadata records for this transformer (e.g. "wan2.1-i2v-14b")."""
    return files_of(transformer).base_model


def lora_expert(path: str | os.PathLike, metadata: Mapping[str, str], experts: Sequence[Expert]) -> Expert:
    """The expert a LoRA file is for: the only one; else the one its metadata names (`expert`, as this project
    writes it), else the one whose file suffix (`lora_high_noise.safetensors`) or name its file name carries."""
    if len(experts) == 1:
        return experts[0]
    named = metadata.get("expert")
    for expert in experts:
        if named == expert.name:
            return expert
    stem = Path(path).stem.lower()
    found = [e for e in experts if (e.suffix and stem.endswith(e.suffix.lower())) or e.name.lower() in stem]
    if len(found) == 1:
        return found[0]
    raise LoraFormatError(f"{path}: which expert is this LoRA for? Name the file after one of "
                          + ", ".join(f"'{e.name}' (...{e.suffix}.safetensors)" for e in experts))


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
    dtype = dtype_from_name(dtype)
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
    files = files_of(transformer)
    formats = files.formats
    if isinstance(source, Mapping):
        peft_sd, alphas = formats.to_peft(source)
        metadata, label = {}, "LoRA state dict"
    else:
        peft_sd, alphas, metadata = formats.load_lora(source, expected_base_model=files.base_model)
        label = str(source)
    try:
        formats.check_fits(peft_sd, transformer)  # modules the model does not have, or other shapes: an error
    except LoraFormatError as e:
        raise e if label in str(e) else type(e)(f"{label}: {e}") from None
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
                which, got, want = ("lora_A", a, la) if la.shape != a.shape else ("lora_B", b, lb)
                raise LoraFormatError(
                    f"{label}: {name}.{which}.weight has shape {'x'.join(map(str, got.shape))}, this adapter's "
                    f"{'x'.join(map(str, want.shape))} (the file's rank {a.shape[0]}, adapter.rank {la.shape[0]}); "
                    "set adapter.rank to the file's rank to start from it")
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
                    base_model: str | None = None, several_experts: bool = False) -> Path:
    """Write a PEFT dict (e.g. gathered from pipeline stages) in the family's file layout `fmt`, with rank,
    alpha, base model (the transformer's unless given), trigger and config in its metadata (and, for a family of
    `several_experts`, the expert it is for)."""
    files = files_of(transformer)
    extra = {"expert": files.expert.name} if several_experts else None
    return files.formats.save_lora(path, dict(state), fmt=fmt, rank=rank, alpha=alpha,
                                   base_model=base_model or files.base_model, trigger=trigger,
                                   config_toml=config_toml, extra=extra)


def save_trained_lora(path: str | os.PathLike, transformer: nn.Module, fmt: str = "comfyui", *, rank: int,
                      alpha: float, base_model: str | None = None, trigger: str = "", config_toml: str = "",
                      adapter_name: str = "default") -> Path:
    """Save the transformer's adapter `adapter_name` (see `save_lora_state`)."""
    return save_lora_state(path, lora_state_dict(transformer, adapter_name), transformer, fmt=fmt, rank=rank,
                           alpha=alpha, trigger=trigger, config_toml=config_toml, base_model=base_model)
