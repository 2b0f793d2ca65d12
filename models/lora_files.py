"""LoRA files, whatever the family: reading and writing safetensors with metadata, key parsing, errors.

Each family's key layouts (models/<family>/lora_formats.py) turn its file keys into a PEFT dict (`to_peft`) and
back (`save_lora`); what they share is here: the errors a user sees, the `<module>.<lora part>` key split, the
metadata every file carries (format, rank, alpha, base model, trigger, the resolved config, software) and the
atomic write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from config.atomic import atomic_path
from config.errors import UserError

SOFTWARE = "lora-edit"
#: key suffix -> the PEFT part it is (kohya/musubi's lora_down/lora_up are PEFT's lora_A/lora_B)
KEY_SUFFIXES = {"lora_A.weight": "lora_A.weight", "lora_B.weight": "lora_B.weight",
                "lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight", "alpha": "alpha"}


class LoraFormatError(UserError):
    """A LoRA whose keys are not a layout of the model's family this project reads, or that do not all map to
    modules."""


class LoraFileNotFoundError(UserError):
    """The LoRA path does not name a file."""


class LoraNotSafetensorsError(UserError):
    """The LoRA file is not a readable safetensors file."""


class LoraBaseModelError(LoraFormatError):
    """A LoRA made for another base model (another family, or another size)."""


def split_key(key: str) -> tuple[str, str] | None:
    """`<module>.<suffix>` -> (module, PEFT part); None for a suffix that is not LoRA down/up/alpha."""
    for suffix, part in KEY_SUFFIXES.items():
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], part
    return None


def sample_keys(keys: list[str], n: int = 5) -> str:
    """The first `n` keys for an error message, and how many more there are."""
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def unmatched_keys(peft_sd: Mapping[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Keys of a PEFT dict that name no linear/conv of `model`, or whose shape does not fit that module."""
    return [key for key, _ in _mismatches(peft_sd, model)]


def unmatched_described(peft_sd: Mapping[str, torch.Tensor], model: nn.Module) -> list[str]:
    """`unmatched_keys`, each with what is wrong ("...lora_A.weight: 4x64, the module takes 32 inputs")."""
    return [f"{key}{why}" for key, why in _mismatches(peft_sd, model)]


def _mismatches(peft_sd: Mapping[str, torch.Tensor], model: nn.Module) -> list[tuple[str, str]]:
    modules = dict(model.named_modules())
    bad = []
    for key, t in peft_sd.items():
        split = split_key(key)
        module = modules.get(split[0]) if split else None
        base = getattr(module, "base_layer", module)  # already wrapped by peft
        shape = "x".join(map(str, t.shape))
        if not isinstance(base, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) or t.ndim < 2:
            bad.append((key, " (no such module)" if module is None else f": {shape}, not a LoRA of a linear"))
            continue
        size_in = base.in_features if isinstance(base, nn.Linear) else base.in_channels
        size_out = base.out_features if isinstance(base, nn.Linear) else base.out_channels
        if split[1] == "lora_A.weight" and t.shape[1] != size_in:
            bad.append((key, f": {shape}, the module takes {size_in} inputs"))
        elif split[1] == "lora_B.weight" and t.shape[0] != size_out:
            bad.append((key, f": {shape}, the module has {size_out} outputs"))
    return bad


def lora_metadata(fmt: str, *, rank: int, alpha: float, base_model: str, trigger: str,
                  config_toml: str = "") -> dict[str, str]:
    """The metadata every LoRA file of this project carries (all strings)."""
    return {"format": fmt, "rank": str(rank), "alpha": str(alpha), "base_model": base_model, "trigger": trigger,
            "config": config_toml, "software": SOFTWARE}


def write_lora_file(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str],
                    extra: dict | None = None, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write LoRA tensors (in `dtype`; `.alpha` scalars float32) and string metadata, plus `extra` (which may not
    override `metadata`), atomically. Shared by every family's LoRA layouts."""
    tensors = {k: v.detach().to("cpu", torch.float32 if k.endswith(".alpha") else dtype).contiguous()
               for k, v in tensors.items()}
    metadata = dict(metadata)
    if clash := set(extra or {}) & set(metadata):
        raise ValueError(f"extra metadata may not override {sorted(clash)}")
    metadata.update({k: str(v) for k, v in (extra or {}).items()})
    path = Path(path)
    with atomic_path(path) as tmp:  # a crash or a reader mid-write never sees half a file
        save_file(tensors, tmp, metadata=metadata)
    return path


def read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors LoRA; a missing or unreadable file is a one-line user error."""
    if not path.is_file():
        raise LoraFileNotFoundError(f"LoRA file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise LoraNotSafetensorsError(f"{path} is not a safetensors file ({e}). Convert .pt/.ckpt LoRAs to "
                                      "safetensors first.") from e
