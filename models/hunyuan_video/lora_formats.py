"""HunyuanVideo LoRA files: write the layouts users load, read the layouts other trainers write.

Layouts (key of one module's down matrix):
  comfyui    `diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight`: the original model's module names, with
             its fused linears (img/txt q-k-v, the single blocks' `linear1` = q, k, v and MLP-in). ComfyUI maps these
             names onto its HunyuanVideo model (comfy/lora.py, `model_lora_keys_unet`: `diffusion_model.` or
             `transformer.` + original name); diffusers' `HunyuanVideoLoraLoaderMixin` detects `img_attn_qkv` and
             converts them (`_convert_hunyuan_video_lora_to_diffusers`, which splits `linear1` at the released
             model's width, 3072). The default.
  diffusers  `transformer.transformer_blocks.0.attn.to_q.lora_A.weight`: diffusers' own names (lossless, no fusing).
  peft       the same names without the prefix.
  musubi     `lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight` + `.alpha` (musubi-tuner, kohya): read only.
Fusing: the parts of a fused linear get one LoRA whose down matrix stacks theirs and whose up matrix is block
diagonal, so the update of every part is exactly its own (rank = sum of the parts' ranks). Reading unfuses it
and drops the all-zero columns each part's up matrix has, which restores the parts' own ranks.

Alpha: diffusers' Hunyuan loader rejects keys without "lora" in them, so no `.alpha` is written: alpha / rank is
folded into lora_B (ComfyUI's scale without `.alpha` is 1). Reading accepts `.alpha` (kohya/diffusion-pipe files).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from models import lora_files
from models.hunyuan_video import layouts as hl
from models.lora_files import LoraBaseModelError, LoraFormatError

FORMATS = ("comfyui", "diffusers", "peft")
__all__ = ["FORMATS", "LoraFormatError", "LoraBaseModelError", "check_fits", "load_lora", "save_lora", "to_peft"]

_ORIGINAL_ROOTS = ("double_blocks.", "single_blocks.", "txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.",
                   "final_layer.")
_DIFFUSERS_ROOTS = ("transformer_blocks.", "single_transformer_blocks.", "context_embedder.", "x_embedder.",
                    "time_text_embed.", "proj_out", "norm_out.")


def _layout_of(name: str) -> tuple[str, str] | None:
    """(layout, module name without prefix, original names dotted) of a module name, or None."""
    if name.startswith("lora_unet_"):  # kohya / musubi-tuner
        original = hl.original_from_underscored(name.removeprefix("lora_unet_"))
        return ("musubi", original) if original else None
    for prefix in ("diffusion_model.", "transformer.", "base_model.model.", ""):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if rest.startswith(_ORIGINAL_ROOTS):
                return "comfyui", rest
            if rest.startswith(_DIFFUSERS_ROOTS):
                return ("peft" if prefix in ("", "base_model.model.") else "diffusers"), rest
    return None


def _unfuse(original: str, a: torch.Tensor, b: torch.Tensor, widths: list[int] | None) -> dict[str, tuple]:
    """One fused original LoRA -> {diffusers module: (A, B)}, each part keeping only the columns its B uses."""
    parts = hl.fused_parts(original)
    if widths is None:  # q/k/v of equal width
        widths = [b.shape[0] // len(parts)] * len(parts)
    out = {}
    for name, b_part in zip(parts, torch.split(b, widths, dim=0)):
        used = b_part.abs().sum(dim=0) != 0
        if not used.any():
            continue  # this part's update is zero
        out[name] = (a[used], b_part[:, used]) if not used.all() else (a, b_part)
    return out


def to_peft(sd: Mapping[str, torch.Tensor], hidden_size: int | None = None
            ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Any supported layout -> (PEFT dict with diffusers' module names, {module: alpha}) with alpha folded into B, so
    every alpha returned equals the module's rank. `hidden_size` splits single blocks' fused `linear1` (default:
    read off the file's q-k-v modules; 3072 for the released model)."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    bad: list[str] = []
    layouts: set[str] = set()
    for key, value in sd.items():
        split = lora_files.split_key(key)
        parsed = _layout_of(split[0]) if split else None
        if parsed is None:
            bad.append(key)
            continue
        layouts.add(parsed[0])
        halves.setdefault(parsed[1], {})[split[1]] = value
    if bad:
        if not halves:
            raise LoraFormatError(f"Unknown LoRA key layout (not a HunyuanVideo comfyui/diffusers/musubi/peft LoRA). "
                                  f"Sample keys: {lora_files.sample_keys(list(sd))}")
        raise LoraFormatError(f"{len(bad)} keys of this LoRA match no HunyuanVideo module: "
                              f"{lora_files.sample_keys(bad, 10)}")
    if incomplete := [m for m, h in halves.items() if "lora_A.weight" not in h or "lora_B.weight" not in h]:
        raise LoraFormatError(f"LoRA modules without both down and up weights: {lora_files.sample_keys(incomplete)}")
    if hidden_size is None:
        qkv = [h["lora_B.weight"].shape[0] // 3 for m, h in halves.items() if m.endswith("img_attn_qkv")]
        hidden_size = qkv[0] if qkv else 3072
    peft: dict[str, torch.Tensor] = {}
    for module, h in halves.items():
        a, b = h["lora_A.weight"], h["lora_B.weight"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise LoraFormatError(f"LoRA down/up ranks differ for {module}")
        if "alpha" in h:
            b = b * (float(h["alpha"].item()) / a.shape[0])
        if module.startswith(_ORIGINAL_ROOTS):
            if hl.fused_parts(module):
                widths = None
                if module.endswith(".linear1"):
                    widths = [hidden_size] * 3 + [b.shape[0] - 3 * hidden_size]
                pairs = _unfuse(module, a, b, widths)
            else:
                mapped = hl.module_from_original(module)
                if mapped is None:
                    raise LoraFormatError(f"LoRA module {module} has no HunyuanVideo counterpart")
                pairs = {mapped: (a, b)}
        else:
            pairs = {module: (a, b)}
        for name, (pa, pb) in pairs.items():
            peft[f"{name}.lora_A.weight"], peft[f"{name}.lora_B.weight"] = pa, pb
    alphas = {k.removesuffix(".lora_A.weight"): float(v.shape[0]) for k, v in peft.items()
              if k.endswith("lora_A.weight")}
    return peft, alphas


def _fuse(peft_sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """PEFT dict -> {original module: (A, B)}, fused linears stacked (A) and block-diagonal (B)."""
    pairs = {k.removesuffix(".lora_A.weight"): (v, peft_sd[k.replace("lora_A", "lora_B")])
             for k, v in peft_sd.items() if k.endswith(".lora_A.weight")}
    groups: dict[str, dict[int, tuple]] = {}
    counts: dict[str, int] = {}
    for name, ab in pairs.items():
        mapped = hl.module_to_original(name)
        if mapped is None:
            raise LoraFormatError(f"LoRA module {name} has no name in the original HunyuanVideo layout")
        groups.setdefault(mapped[0], {})[mapped[1]] = ab
        counts[mapped[0]] = mapped[2]
    out = {}
    for orig, parts in groups.items():
        if counts[orig] == 1:
            out[orig] = parts[0]
            continue
        names = hl.fused_parts(orig)
        present = sorted(parts)
        # Output width of every part, absent ones too: known from the present parts (q/k/v equal; MLP-in apart).
        widths = []
        for i in range(len(names)):
            if i in parts:
                widths.append(parts[i][1].shape[0])
            elif names[i].endswith("proj_mlp"):
                raise LoraFormatError(f"{orig}: a LoRA on the single block's q/k/v without its proj_mlp cannot be "
                                      "fused (its width is unknown); train all four or save in the diffusers layout")
            else:
                widths.append(next(parts[j][1].shape[0] for j in present if not names[j].endswith("proj_mlp")))
        a = torch.cat([parts[i][0] for i in present], dim=0)
        b = torch.zeros(sum(widths), a.shape[0], dtype=parts[present[0]][1].dtype)
        row, col = [0, *torch.tensor(widths).cumsum(0).tolist()], 0
        for i in present:
            bi = parts[i][1]
            b[row[i]:row[i] + bi.shape[0], col:col + bi.shape[1]] = bi
            col += bi.shape[1]
        out[orig] = (a, b)
    return out


def save_lora(path: str | os.PathLike, peft_sd: Mapping[str, torch.Tensor], *, fmt: str = "comfyui", rank: int,
              alpha: float, base_model: str, trigger: str, config_toml: str = "", extra: dict | None = None,
              dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write a PEFT dict (alpha = `alpha` on every module) as a "comfyui" or "diffusers" layout LoRA, atomically,
    alpha / rank folded into lora_B; metadata as for Wan (format, rank, alpha, base_model, trigger, config)."""
    scaled = {k: v.float() * (alpha / v.shape[1]) if k.endswith("lora_B.weight") else v.float()
              for k, v in peft_sd.items()}
    if fmt == "comfyui":
        tensors = {f"diffusion_model.{m}.{part}": t for m, ab in _fuse(scaled).items()
                   for part, t in zip(("lora_A.weight", "lora_B.weight"), ab)}
    elif fmt == "diffusers":
        tensors = {f"transformer.{k}": v for k, v in scaled.items()}
    else:
        raise LoraFormatError(f"Cannot write LoRA layout {fmt!r}: choose 'comfyui' or 'diffusers'.")
    metadata = lora_files.lora_metadata(fmt, rank=rank, alpha=alpha, base_model=base_model, trigger=trigger,
                             config_toml=config_toml)
    return lora_files.write_lora_file(path, tensors, metadata, extra, dtype)


def check_fits(peft_sd: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Raise LoraBaseModelError when the LoRA names modules the model lacks or has other shapes."""
    if bad := lora_files.unmatched_described(peft_sd, model):
        raise LoraBaseModelError(f"LoRA does not fit this model: {len(bad)} keys name no module or have other "
                                 f"shapes: {lora_files.sample_keys(bad)}.")


def load_lora(path: str | os.PathLike, *, expected_base_model: str | None = None
              ) -> tuple[dict[str, torch.Tensor], dict[str, float], dict[str, str]]:
    """Read a HunyuanVideo LoRA file in any supported layout -> (PEFT dict, {module: alpha}, metadata)."""
    path = Path(path)
    sd, metadata = lora_files.read_lora_file(path)
    declared = metadata.get("base_model") or metadata.get("ss_base_model_version") or ""
    if declared and "hunyuan" not in declared.lower():
        raise LoraBaseModelError(f"{path} is a LoRA for {declared!r} (its metadata says so), not HunyuanVideo.")
    del expected_base_model  # one released size: nothing further to tell apart
    try:
        peft_sd, alphas = to_peft(sd)
    except LoraFormatError as e:
        raise type(e)(f"{path}: {e}") from e
    return peft_sd, alphas, metadata
