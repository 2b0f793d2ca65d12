"""HunyuanVideo-I2V weight layouts: file names, the prompt template, and original <-> diffusers key names.

Original release (Tencent's `HunyuanVideo-I2V` download, the `ckpts` folder):
  hunyuan-video-i2v-720p/transformers/mp_rank_00_model_states.pt   ({"module": state dict}, original names)
  hunyuan-video-i2v-720p/vae/pytorch_model.pt + config.json        (keys already diffusers' names)
  text_encoder_i2v/   LLaVA-Llama-3 in the transformers layout (+ tokenizer, image processor)
  text_encoder_2/     CLIP-L text model in the transformers layout (+ tokenizer)
Single-file transformer: one safetensors with the original names (ComfyUI's `hunyuan_video_image_to_video_*`),
optionally prefixed `model.diffusion_model.` or `diffusion_model.`.

Loading converts with diffusers' `convert_hunyuan_video_transformer_to_diffusers`, except the single blocks'
fused `linear1`, which that converter splits at the real model's width (3072) and which is therefore split
here at the checkpoint's own width first. `transformer_diffusers_to_original` is the inverse (for tiny
fixtures and LoRA naming); the tests check the round trip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from models.hunyuan_video import spec

ORIGINAL_MODEL_DIR = spec.ORIGINAL_MODEL_DIR
ORIGINAL_TRANSFORMER = "transformers/mp_rank_00_model_states.pt"
ORIGINAL_VAE = "vae/pytorch_model.pt"
ORIGINAL_VAE_CONFIG = "vae/config.json"
ORIGINAL_TEXT_ENCODER = "text_encoder_i2v"
ORIGINAL_TEXT_ENCODER_2 = "text_encoder_2"

# The I2V prompt template (diffusers' DEFAULT_PROMPT_TEMPLATE of HunyuanVideoImageToVideoPipeline, and the
# original repo's "dit-llm-encode-video-i2v"): the LLaVA sees the image at <image> and the prompt at {}.
PROMPT_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n<image>\nDescribe the video by detailing the following aspects "
    "according to the reference image: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>\n\n"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)

# diffusers name -> original name, per block kind (the fused q/k/v and linear1 are handled apart).
_DOUBLE = {"norm1.linear": "img_mod.linear", "norm1_context.linear": "txt_mod.linear", "attn.norm_q": "img_attn_q_norm",
           "attn.norm_k": "img_attn_k_norm", "attn.to_out.0": "img_attn_proj", "attn.norm_added_q": "txt_attn_q_norm",
           "attn.norm_added_k": "txt_attn_k_norm", "attn.to_add_out": "txt_attn_proj",
           "ff.net.0.proj": "img_mlp.fc1", "ff.net.2": "img_mlp.fc2", "ff_context.net.0.proj": "txt_mlp.fc1",
           "ff_context.net.2": "txt_mlp.fc2"}
_DOUBLE_FUSED = {"img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
                 "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
_SINGLE = {"proj_out": "linear2", "attn.norm_q": "q_norm", "attn.norm_k": "k_norm", "norm.linear": "modulation.linear"}
_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}
_REFINER = {"norm1": "norm1", "norm2": "norm2", "attn.to_out.0": "self_attn_proj", "ff.net.0.proj": "mlp.fc1",
            "ff.net.2": "mlp.fc2", "norm_out.linear": "adaLN_modulation.1"}
_REFINER_FUSED = {"self_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v")}
_GLOBAL = {"x_embedder.proj": "img_in.proj", "time_text_embed.timestep_embedder.linear_1": "time_in.mlp.0",
           "time_text_embed.timestep_embedder.linear_2": "time_in.mlp.2",
           "time_text_embed.guidance_embedder.linear_1": "guidance_in.mlp.0",
           "time_text_embed.guidance_embedder.linear_2": "guidance_in.mlp.2",
           "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
           "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
           "context_embedder.proj_in": "txt_in.input_embedder",
           "context_embedder.time_text_embed.timestep_embedder.linear_1": "txt_in.t_embedder.mlp.0",
           "context_embedder.time_text_embed.timestep_embedder.linear_2": "txt_in.t_embedder.mlp.2",
           "context_embedder.time_text_embed.text_embedder.linear_1": "txt_in.c_embedder.linear_1",
           "context_embedder.time_text_embed.text_embedder.linear_2": "txt_in.c_embedder.linear_2",
           "proj_out": "final_layer.linear", "norm_out.linear": "final_layer.adaLN_modulation.1"}
_KINDS = {"transformer_blocks": ("double_blocks", _DOUBLE, _DOUBLE_FUSED),
          "single_transformer_blocks": ("single_blocks", _SINGLE, _SINGLE_FUSED),
          "context_embedder.token_refiner.refiner_blocks": ("txt_in.individual_token_refiner.blocks", _REFINER,
                                                            _REFINER_FUSED)}


def module_to_original(name: str) -> tuple[str, int, int] | None:
    """A diffusers module name -> (original module name, part index, number of parts) for a module that is one
    slice of a fused original one (q/k/v, linear1), (name, 0, 1) otherwise; None if it has no original name."""
    if name in _GLOBAL:
        return _GLOBAL[name], 0, 1
    for prefix, (orig_prefix, plain, fused) in _KINDS.items():
        m = re.fullmatch(rf"{re.escape(prefix)}\.(\d+)\.(.+)", name)
        if not m:
            continue
        base = f"{orig_prefix}.{m[1]}."
        if m[2] in plain:
            return base + plain[m[2]], 0, 1
        for orig, parts in fused.items():
            if m[2] in parts:
                return base + orig, parts.index(m[2]), len(parts)
        return None
    return None


def module_from_original(original: str) -> str | None:
    """An original (unfused) module name -> its diffusers name; None for fused or unknown ones."""
    for name, orig in _GLOBAL.items():
        if orig == original:
            return name
    for prefix, (orig_prefix, plain, _) in _KINDS.items():
        m = re.fullmatch(rf"{re.escape(orig_prefix)}\.(\d+)\.(.+)", original)
        if m:
            inverse = {v: k for k, v in plain.items()}
            return f"{prefix}.{m[1]}.{inverse[m[2]]}" if m[2] in inverse else None
    return None


def original_from_underscored(name: str) -> str | None:
    """kohya/musubi-tuner's module name (`double_blocks_0_img_mlp_fc1`: every dot an underscore) -> the original
    dotted name (`double_blocks.0.img_mlp.fc1`), found among the model's known module names; None if unknown."""
    for _, (orig_prefix, plain, fused) in _KINDS.items():
        m = re.fullmatch(rf"{re.escape(orig_prefix.replace('.', '_'))}_(\d+)_(.+)", name)
        if m:
            known = {n.replace(".", "_"): n for n in [*plain.values(), *fused]}
            return f"{orig_prefix}.{m[1]}.{known[m[2]]}" if m[2] in known else None
    return {n.replace(".", "_"): n for n in _GLOBAL.values()}.get(name)


def fused_parts(original: str) -> list[str] | None:
    """An original fused module (e.g. `double_blocks.3.img_attn_qkv`) -> its diffusers modules, in order."""
    for prefix, (orig_prefix, _, fused) in _KINDS.items():
        m = re.fullmatch(rf"{re.escape(orig_prefix)}\.(\d+)\.(.+)", original)
        if m and m[2] in fused:
            return [f"{prefix}.{m[1]}.{p}" for p in fused[m[2]]]
    return None


def transformer_diffusers_to_original(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers HunyuanVideoTransformer3DModel state dict in the original release's names (fused q/k/v and
    linear1, final adaLN as [shift, scale])."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        mapped = module_to_original(module)
        if mapped is None:
            raise KeyError(f"no original name for {key}")
        orig, part, parts = mapped
        if parts > 1:
            fused.setdefault(f"{orig}.{leaf}", {})[part] = value
        elif module == "norm_out.linear":  # diffusers stores [scale, shift], the original [shift, scale]
            scale, shift = value.chunk(2, dim=0)
            out[f"{orig}.{leaf}"] = torch.cat([shift, scale], dim=0)
        else:
            out[f"{orig}.{leaf}"] = value
    for key, parts in fused.items():
        out[key] = torch.cat([parts[i] for i in sorted(parts)], dim=0)
    return out


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ComfyUI's `model.diffusion_model.` / `diffusion_model.` prefix when every key has it."""
    for prefix in ("model.diffusion_model.", "diffusion_model."):
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def transformer_original_to_diffusers(state: dict[str, torch.Tensor], hidden_size: int) -> dict[str, torch.Tensor]:
    """Original names -> diffusers names with diffusers' converter, the single blocks' linear1 split at
    `hidden_size` here first (the converter assumes 3072). Consumes `state`."""
    from diffusers.loaders.single_file_utils import convert_hunyuan_video_transformer_to_diffusers

    split: dict[str, torch.Tensor] = {}
    for key in [k for k in state if re.fullmatch(r"single_blocks\.\d+\.linear1\.(weight|bias)", k)]:
        value = state.pop(key)
        block, leaf = key.removesuffix(".weight").removesuffix(".bias"), key.rpartition(".")[2]
        sizes = (hidden_size, hidden_size, hidden_size, value.shape[0] - 3 * hidden_size)
        for name, part in zip(fused_parts(block), torch.split(value, sizes, dim=0)):
            split[f"{name}.{leaf}"] = part
    converted = convert_hunyuan_video_transformer_to_diffusers(state)
    converted.update(split)
    # Split parts are strided views: contiguous copies compute bit-identically to the diffusers checkpoint's.
    return {k: v.contiguous() for k, v in converted.items()}


def unwrap_checkpoint(saved: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict inside a .pt: DeepSpeed's {"module": ...}, {"model": ...}, {"state_dict": ...} or itself."""
    for key in ("module", "model", "state_dict"):
        if key in saved and isinstance(saved[key], Mapping):
            return dict(saved[key])
    return dict(saved)


def original_transformer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A HunyuanVideoTransformer3DModel config read off an original-layout state dict (no config file ships
    with it). Head width 128 as in every released HunyuanVideo; tiny fixtures use 16 (read from the q-norm)."""
    head_dim = int(state["double_blocks.0.img_attn_q_norm.weight"].shape[0])
    hidden = int(state["img_in.proj.weight"].shape[0])
    in_channels = int(state["img_in.proj.weight"].shape[1])
    patch = state["img_in.proj.weight"].shape[2:]
    mlp_hidden = int(state["double_blocks.0.img_mlp.fc1.weight"].shape[0])
    count = lambda prefix: len({k.split(".")[1] for k in state if k.startswith(prefix)})  # noqa: E731
    refiners = len({k.split(".")[3] for k in state if k.startswith("txt_in.individual_token_refiner.blocks.")})
    cfg = {
        "in_channels": in_channels, "out_channels": int(state["final_layer.linear.weight"].shape[0])
        // (int(patch[0]) * int(patch[1]) * int(patch[2])),
        "num_attention_heads": hidden // head_dim, "attention_head_dim": head_dim,
        "num_layers": count("double_blocks."), "num_single_layers": count("single_blocks."),
        "num_refiner_layers": refiners, "mlp_ratio": mlp_hidden / hidden, "patch_size": int(patch[1]),
        "patch_size_t": int(patch[0]), "qk_norm": "rms_norm", "guidance_embeds": "guidance_in.mlp.0.weight" in state,
        "text_embed_dim": int(state["txt_in.input_embedder.weight"].shape[1]),
        "pooled_projection_dim": int(state["vector_in.in_layer.weight"].shape[1]), "rope_theta": 256.0,
        "image_condition_type": {33: "latent_concat", 16: "token_replace"}.get(in_channels),
    }
    # The rotary split (t, h, w) of the head: (16, 56, 56) for 128; tiny models use (4, 6, 6) for 16.
    cfg["rope_axes_dim"] = (16, 56, 56) if head_dim == 128 else (head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8)
    return cfg


def original_vae_config(diffusers_config: Mapping[str, Any]) -> dict[str, Any]:
    """The original release's VAE config.json (AutoencoderKLCausal3D) for a diffusers VAE config."""
    return {"_class_name": "AutoencoderKLCausal3D", "in_channels": diffusers_config["in_channels"],
            "out_channels": diffusers_config["out_channels"], "latent_channels": diffusers_config["latent_channels"],
            "block_out_channels": list(diffusers_config["block_out_channels"]),
            "layers_per_block": diffusers_config["layers_per_block"],
            "norm_num_groups": diffusers_config["norm_num_groups"], "act_fn": diffusers_config["act_fn"],
            "scaling_factor": diffusers_config["scaling_factor"],
            "time_compression_ratio": diffusers_config["temporal_compression_ratio"],
            "mid_block_add_attention": diffusers_config["mid_block_add_attention"]}


def vae_config_from_original(original: Mapping[str, Any]) -> dict[str, Any]:
    """AutoencoderKLHunyuanVideo config from the original VAE config.json (its own field names)."""
    n = len(original["block_out_channels"])
    return {"in_channels": original.get("in_channels", 3), "out_channels": original.get("out_channels", 3),
            "latent_channels": original.get("latent_channels", 16),
            "block_out_channels": tuple(original["block_out_channels"]),
            "down_block_types": ("HunyuanVideoDownBlock3D",) * n, "up_block_types": ("HunyuanVideoUpBlock3D",) * n,
            "layers_per_block": original.get("layers_per_block", 2),
            "norm_num_groups": original.get("norm_num_groups", 32), "act_fn": original.get("act_fn", "silu"),
            "scaling_factor": original.get("scaling_factor", 0.476986),
            "spatial_compression_ratio": 2 ** (n - 1),
            "temporal_compression_ratio": original.get("time_compression_ratio", 4),
            "mid_block_add_attention": original.get("mid_block_add_attention", True)}


def detect_layout(path: Path) -> str:
    """"diffusers" (model_index.json or transformer/), "original" (the ckpts folder) or "single-file"."""
    if path.is_file():
        if path.suffix in (".safetensors", ".pt", ".pth"):
            return "single-file"
        raise ValueError(f"{path}: not a weights folder or a .safetensors transformer file")
    if (path / "model_index.json").is_file() or (path / "transformer" / "config.json").is_file():
        return "diffusers"
    if (path / ORIGINAL_MODEL_DIR / ORIGINAL_TRANSFORMER).is_file() or (path / ORIGINAL_TEXT_ENCODER).is_dir():
        return "original"
    raise ValueError(
        f"{path}: not a HunyuanVideo-I2V folder: expected a diffusers folder (model_index.json, transformer/, vae/, "
        f"text_encoder/, ...) or the original release folder ({ORIGINAL_MODEL_DIR}/{ORIGINAL_TRANSFORMER}, "
        f"{ORIGINAL_MODEL_DIR}/{ORIGINAL_VAE}, {ORIGINAL_TEXT_ENCODER}/, {ORIGINAL_TEXT_ENCODER_2}/)")
