"""Wan2.1 LoRA files: write them in the layouts users load, read the layouts other trainers write.

Layouts (key of one module's down matrix):
  comfyui    `diffusion_model.blocks.0.self_attn.q.lora_A.weight` (original-Wan module names; also
             `lora_down/lora_up`, per-module `.alpha`, or no prefix). ComfyUI and diffusers' Wan loader read it,
             except that diffusers' converter has no entry for `patch_embedding`.
  diffusers  `transformer.blocks.0.attn1.to_q.lora_A.weight` (diffusers' `save_lora_weights` layout).
  musubi     `lora_unet_blocks_0_self_attn_q.lora_down.weight` + `.alpha` (musubi-tuner, kohya style).
  peft       `blocks.0.attn1.to_q.lora_A.weight`: `get_peft_model_state_dict` of the diffusers model.
Inside the project LoRAs are PEFT dicts; `to_peft` reads any layout, `save_lora` writes comfyui or diffusers.

Alpha. A LoRA adds (alpha / rank) * B @ A. ComfyUI reads `<module>.alpha` for any module (scale
alpha / down.shape[0], 1 without it: comfy/weight_adapter/lora.py); diffusers' Wan converter folds `.alpha`
into the weights only for the per-block modules (self_attn, cross_attn, ffn) and rejects a file with any other
`.alpha`; its diffusers-layout path needs "lora" in every key, so no `.alpha` there. Hence: comfyui files
carry a float32 `.alpha` for every block module (the trained tensors stay as trained) and fold
alpha / rank into lora_B for non-block modules; diffusers files fold it into lora_B everywhere. A module
without an alpha therefore means alpha = rank.

Dtype: bf16 by default, half the size of fp32. Users run Wan in bf16 (or fp8), ComfyUI builds the patch in
float32 whatever the file holds, and diffusers copies the tensors into the adapter's own dtype. `.alpha`
scalars stay float32 so alphas like 0.7 are exact.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from models.lora_files import (
    LoraBaseModelError,
    LoraFileNotFoundError,
    LoraFormatError,
    LoraNotSafetensorsError,
    lora_metadata,
    read_lora_file,
    sample_keys,
    split_key,
    unmatched_described,
    unmatched_keys,
    write_lora_file,
)

# The errors are the shared ones (models.lora_files); they are named here too, as part of this module's surface.
__all__ = ["FORMATS", "LoraBaseModelError", "LoraFileNotFoundError", "LoraFormatError", "LoraNotSafetensorsError",
           "check_fits", "detect_format", "load_lora", "save_lora", "to_comfyui", "to_diffusers", "to_peft",
           "unmatched_keys"]

FORMATS = ("comfyui", "diffusers", "musubi", "peft")

# Linear/conv modules of the original Wan2.1 model (wan/modules/model.py; ComfyUI's WanModel uses the same).
_ORIGINAL_BLOCK_MODULES = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                           "cross_attn.v", "cross_attn.o", "cross_attn.k_img", "cross_attn.v_img", "ffn.0", "ffn.2")
_ORIGINAL_GLOBAL_MODULES = ("patch_embedding", "text_embedding.0", "text_embedding.2", "time_embedding.0",
                            "time_embedding.2", "time_projection.1", "img_emb.proj.1", "img_emb.proj.3", "head.head")
_PREFIXES = {"comfyui": "diffusion_model.", "musubi": "lora_unet_", "diffusers": "transformer.",
             "peft": "base_model.model."}
# Hidden size -> model, to name the size a LoRA was made for.
_WAN_SIZES = {1536: "1.3b", 3072: "5b", 5120: "14b"}


@functools.cache
def _name_maps() -> tuple[dict[str, str], dict[str, str]]:
    """(block-suffix map, global map), original Wan name -> diffusers name, taken from diffusers' own checkpoint
    converter so the two names cannot drift apart. Its renames do not depend on the block index."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    def convert(name: str) -> str:
        (new,) = convert_wan_transformer_to_diffusers({f"{name}.weight": None})
        return new.removesuffix(".weight")

    block = {m: convert(f"blocks.0.{m}").removeprefix("blocks.0.") for m in _ORIGINAL_BLOCK_MODULES}
    glob = {m: convert(m) for m in _ORIGINAL_GLOBAL_MODULES}
    assert len(set(block.values())) == len(block) and len(set(glob.values())) == len(glob), "map not invertible"
    return block, glob


def _original_to_diffusers(name: str, sep: str = ".") -> str | None:
    """`blocks.0.self_attn.q` -> `blocks.0.attn1.to_q`; sep="_" reads musubi's `blocks_0_self_attn_q`."""
    block, glob = _name_maps()
    if m := re.fullmatch(rf"blocks{re.escape(sep)}(\d+){re.escape(sep)}(.+)", name):
        suffix = {k.replace(".", sep): v for k, v in block.items()}.get(m[2])
        return f"blocks.{m[1]}.{suffix}" if suffix else None
    return {k.replace(".", sep): v for k, v in glob.items()}.get(name)


def _diffusers_to_original(name: str) -> str | None:
    block, glob = _name_maps()
    if m := re.fullmatch(r"blocks\.(\d+)\.(.+)", name):
        inv = {v: k for k, v in block.items()}
        return f"blocks.{m[1]}.{inv[m[2]]}" if m[2] in inv else None
    return {v: k for k, v in glob.items()}.get(name)


def _parse(key: str) -> tuple[str, str, str] | None:
    """(layout, diffusers module name, part) of one key, or None when it names no Wan2.1 module."""
    split = split_key(key)
    if split is None:
        return None
    raw, part = split
    for fmt, prefix in _PREFIXES.items():
        if raw.startswith(prefix):
            rest = raw[len(prefix):]
            if fmt == "comfyui":
                name = _original_to_diffusers(rest)
            elif fmt == "musubi":
                name = _original_to_diffusers(rest, "_")
            else:
                name = rest if _diffusers_to_original(rest) else None
            return (fmt, name, part) if name else None
    if _diffusers_to_original(raw):
        return "peft", raw, part
    if name := _original_to_diffusers(raw):  # original names without the `diffusion_model.` prefix
        return "comfyui", name, part
    return None


def _foreign_family(keys: list[str]) -> str | None:
    """The model family that keys of another architecture look like, when it can be told."""
    strip = re.compile(r"^(diffusion_model\.|transformer\.|base_model\.model\.|lora_unet_|lora_transformer_|lycoris_)")
    for key in keys:
        k = strip.sub("", key)
        if "token_refiner" in k or re.search(r"\.(img|txt)_attn_qkv\.", key):
            return "HunyuanVideo"
    for key in keys:
        k = strip.sub("", key)
        if re.search(r"(img|txt)_attn\.qkv", k):
            return "Flux"
        if re.match(r"(double_blocks|single_blocks|single_transformer_blocks)", k):
            return "Flux or HunyuanVideo"
        if k.startswith("joint_blocks"):
            return "Stable Diffusion 3"
        if re.match(r"(down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block)", k) \
                or key.startswith("lora_te"):
            return "Stable Diffusion (UNet)"
        if k.startswith("transformer_blocks"):
            return "another DiT with `transformer_blocks` (CogVideoX, LTX-Video, Mochi, Qwen-Image, ...)"
    return None


def detect_format(sd: Mapping[str, object]) -> str:
    """The layout most keys are in: "comfyui", "diffusers", "musubi" or "peft". Raises LoraBaseModelError for
    another model family, LoraFormatError for anything else unknown."""
    keys = list(sd)
    if not keys:
        raise LoraFormatError("The LoRA holds no tensors.")
    counts: dict[str, int] = {}
    for parsed in filter(None, map(_parse, keys)):
        counts[parsed[0]] = counts.get(parsed[0], 0) + 1
    if sum(counts.values()) * 2 < len(keys) and (family := _foreign_family(keys)):
        raise LoraBaseModelError(f"This LoRA is for {family}, not Wan2.1 (keys such as {sample_keys(keys, 3)}).")
    if not counts:
        raise LoraFormatError(f"Unknown LoRA key layout (not a Wan2.1 comfyui/diffusers/musubi/peft LoRA). "
                              f"Sample keys: {sample_keys(keys)}")
    return max(counts, key=counts.__getitem__)


def _pairs(peft_sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module -> (lora_A, lora_B) of a PEFT dict, checking names and that each module has both halves."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    bad = []
    for key, value in peft_sd.items():
        split = split_key(key)
        if split is None or split[1] == "alpha" or not _diffusers_to_original(split[0]):
            bad.append(key)
        else:
            halves.setdefault(split[0], {})[split[1]] = value
    bad += [f"{m}.lora_{'B' if 'lora_A.weight' in h else 'A'}.weight (missing)" for m, h in halves.items()
            if len(h) != 2]
    if bad:
        raise LoraFormatError(f"{len(bad)} LoRA keys are not Wan2.1 LoRA weights or lack their other half: "
                              f"{sample_keys(bad, 10)}")
    return {m: (h["lora_A.weight"], h["lora_B.weight"]) for m, h in halves.items()}


def _is_block_module(name: str) -> bool:
    return name.startswith("blocks.")


def to_comfyui(peft_sd: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """PEFT dict -> ComfyUI/original-Wan layout with `.alpha` on block modules (see the module docstring)."""
    out = {}
    for module, (a, b) in _pairs(peft_sd).items():
        key = f"diffusion_model.{_diffusers_to_original(module)}"
        if _is_block_module(module):
            out[f"{key}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
        elif alpha != a.shape[0]:
            b = b * (alpha / a.shape[0])  # diffusers rejects `.alpha` here: fold it
        out[f"{key}.lora_A.weight"], out[f"{key}.lora_B.weight"] = a, b
    return out


def to_diffusers(peft_sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT dict -> diffusers layout (`transformer.` prefix). Alpha is not stored: fold it first."""
    return {f"transformer.{m}.{part}": t for m, ab in _pairs(peft_sd).items()
            for part, t in zip(("lora_A.weight", "lora_B.weight"), ab)}


def to_peft(sd: Mapping[str, torch.Tensor], network_alpha_target: float | None = None
            ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Any supported layout -> (PEFT dict with the diffusers model's names, {module: alpha}).

    Without `network_alpha_target` the tensors are returned as stored and `alphas` holds the modules whose file
    gave one (scale = alpha / rank; a module absent from it has alpha = rank). With it, lora_B is rescaled so a
    PEFT LoRA whose lora_alpha is that value reproduces the file, and every module maps to it. Raises
    LoraFormatError listing every key that maps to no module: nothing is dropped.
    """
    fmt = detect_format(sd)
    peft_sd: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    bad = []
    for key, value in sd.items():
        parsed = _parse(key)
        if parsed is None or parsed[0] != fmt:
            bad.append(key)
        elif parsed[2] == "alpha":
            if value.numel() != 1 or parsed[1] in alphas:
                bad.append(key)
            else:
                alphas[parsed[1]] = float(value.item())
        elif (new := f"{parsed[1]}.{parsed[2]}") in peft_sd:  # both lora_A and lora_down for one module
            bad.append(key)
        else:
            peft_sd[new] = value
    bad += [f"{m}.alpha (no weights)" for m in alphas if f"{m}.lora_A.weight" not in peft_sd]
    if bad:
        raise LoraFormatError(f"{len(bad)} keys of this {fmt}-layout LoRA match no Wan2.1 module: "
                              f"{sample_keys(bad, 10)}")
    pairs = _pairs(peft_sd)
    if mismatched := [m for m, (a, b) in pairs.items() if min(a.ndim, b.ndim) < 2 or a.shape[0] != b.shape[1]]:
        raise LoraFormatError(f"LoRA down/up ranks differ for: {sample_keys(mismatched)}")
    if network_alpha_target is not None:
        for module, (a, b) in pairs.items():
            factor = alphas.get(module, a.shape[0]) / network_alpha_target
            if factor != 1:
                peft_sd[f"{module}.lora_B.weight"] = (b.float() * factor).to(b.dtype)
        alphas = dict.fromkeys(pairs, float(network_alpha_target))
    return peft_sd, alphas


def _hidden_size(peft_sd: Mapping[str, torch.Tensor]) -> int | None:
    for key, t in peft_sd.items():
        if re.fullmatch(r"blocks\.\d+\.attn1\.to_[qkv]\.lora_A\.weight", key):
            return int(t.shape[1])
    return None


def check_fits(peft_sd: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Raise LoraBaseModelError naming the mismatch when the LoRA does not fit `model`."""
    if bad := unmatched_described(peft_sd, model):
        cfg = getattr(model, "config", None)
        dim = getattr(cfg, "num_attention_heads", 0) * getattr(cfg, "attention_head_dim", 0)
        size = _hidden_size(peft_sd)
        hint = f" The LoRA's hidden size is {size}{_size_name(size)}, the model's {dim}." if size != dim else ""
        raise LoraBaseModelError(f"LoRA does not fit this model: {len(bad)} keys name no module or have other "
                                 f"shapes: {sample_keys(bad)}.{hint}")


def _size_name(hidden: int | None) -> str:
    return f" (a Wan {_WAN_SIZES[hidden].upper()} LoRA)" if hidden in _WAN_SIZES else ""


def _size_token(name: str) -> str | None:
    found = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)b(?![a-z])", name.lower())
    return f"{found[1]}b" if found else None


def _check_declared_base(path: Path, metadata: Mapping[str, str], expected: str | None) -> None:
    """Reject a file whose metadata names another model family, or another Wan size than `expected`."""
    declared = metadata.get("base_model") or metadata.get("ss_base_model_version") or \
        metadata.get("modelspec.architecture")
    if not declared:
        return
    if "wan" not in declared.lower():
        raise LoraBaseModelError(f"{path} is a LoRA for {declared!r} (its metadata says so), not Wan2.1.")
    want, have = _size_token(expected or ""), _size_token(declared)
    if want and have and want != have:
        raise LoraBaseModelError(f"{path} was made for {declared!r}, but the base model is {expected!r}.")


def save_lora(path: str | os.PathLike, peft_sd: Mapping[str, torch.Tensor], *, fmt: str = "comfyui", rank: int,
              alpha: float, base_model: str, trigger: str, config_toml: str = "", extra: dict | None = None,
              dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write a PEFT dict as a safetensors LoRA in the "comfyui" or "diffusers" layout, atomically.

    Metadata (all strings): format, rank, alpha, base_model, trigger, config (the resolved TOML), software, plus
    `extra` (which may not override those).
    """
    if fmt == "comfyui":
        tensors = to_comfyui(peft_sd, alpha)
    elif fmt == "diffusers":
        tensors = to_diffusers({k: v * (alpha / v.shape[1]) if k.endswith("lora_B.weight") else v
                                for k, v in peft_sd.items()})
    else:
        raise LoraFormatError(f"Cannot write LoRA layout {fmt!r}: choose 'comfyui' or 'diffusers'.")
    metadata = lora_metadata(fmt, rank=rank, alpha=alpha, base_model=base_model, trigger=trigger,
                             config_toml=config_toml)
    return write_lora_file(path, tensors, metadata, extra, dtype)


def load_lora(path: str | os.PathLike, *, expected_base_model: str | None = None
              ) -> tuple[dict[str, torch.Tensor], dict[str, float], dict[str, str]]:
    """Read a LoRA file in any supported layout -> (PEFT dict, {module: alpha}, file metadata).

    `expected_base_model` (e.g. "wan2.1-i2v-14b-480p") also rejects a LoRA of another Wan size, told from its
    metadata or its shapes. Alphas are as in `to_peft` without a target.
    """
    path = Path(path)
    sd, metadata = read_lora_file(path)
    _check_declared_base(path, metadata, expected_base_model)
    try:
        peft_sd, alphas = to_peft(sd)
    except LoraFormatError as e:
        raise type(e)(f"{path}: {e}") from e
    want, have = _size_token(expected_base_model or ""), _WAN_SIZES.get(_hidden_size(peft_sd) or 0)
    if want and have and want != have:
        raise LoraBaseModelError(f"{path} has the shapes{_size_name(_hidden_size(peft_sd))}, but the base model is "
                                 f"{expected_base_model!r}.")
    return peft_sd, alphas, metadata
