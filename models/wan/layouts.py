"""Wan2.1 weight layouts: detect them and map their keys onto the diffusers / transformers models.

Three layouts users download:

* ``diffusers``   - ``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers``: ``model_index.json`` plus one folder per
  component; loads with ``from_pretrained``.
* ``original``    - ``Wan-AI/Wan2.1-I2V-14B-480P``: ``config.json`` (WanModel), sharded
  ``diffusion_pytorch_model-*.safetensors`` + index, ``Wan2.1_VAE.pth``, the umT5 and CLIP ``.pth`` files.
* ``single-file`` - one ComfyUI-style transformer ``.safetensors`` with original keys, optionally prefixed
  ``model.diffusion_model.``, in bf16 / fp16 / fp8.

Transformer and VAE keys go through diffusers' own converters. The umT5 and CLIP keys follow the Wan2.1
repository's ``wan/modules/t5.py`` and ``wan/modules/clip.py`` (which diffusers does not convert); those key maps
live in ``models.wan.keys``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
    UMT5Config,
    UMT5EncoderModel,
)

from models.loading import CLIPImageProcessor
from models.wan import spec
from models.wan.keys import (  # noqa: F401 (fixtures and tools import the key maps from this module)
    clip_vision_hf_to_original,
    clip_vision_original_to_hf,
    t5_hf_to_original,
    t5_original_to_hf,
    wan_transformer_diffusers_to_original,
    wan_vae_diffusers_to_original,
)

StateDict = dict[str, torch.Tensor]

ORIGINAL_CONFIG = "config.json"
ORIGINAL_INDEX = "diffusion_pytorch_model.safetensors.index.json"
ORIGINAL_SINGLE = "diffusion_pytorch_model.safetensors"
ORIGINAL_VAE = spec.ORIGINAL_VAE
ORIGINAL_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
ORIGINAL_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
ORIGINAL_T5_TOKENIZER = "google/umt5-xxl"
ORIGINAL_CLIP_TOKENIZER = "xlm-roberta-large"  # CLIP text tower's tokenizer; the I2V path never needs it

# Each diffusers component folder and the file that must be in it.
DIFFUSERS_COMPONENT_FILES = {
    "transformer": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "tokenizer": "tokenizer_config.json",
    "scheduler": "scheduler_config.json",
    "image_encoder": "config.json",
    "image_processor": "preprocessor_config.json",
}
SINGLE_FILE_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
# The real text context length: Wan's attention splits image tokens from text tokens at 512.
WAN_TEXT_LEN = 512


class WeightLayoutError(ValueError):
    """A model path is not a recognised Wan layout, or files of its layout are missing."""


# ----------------------------------------------------------------------------------------------- detection


def _listing(path: Path, limit: int = 20) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    more = f" ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "(empty directory)"


def _weights_missing(folder: Path, stem: str) -> list[str]:
    """Missing weight files of a (possibly sharded) diffusers / transformers component."""
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [f"{folder.name}/{s}" for s in shards if not (folder / s).is_file()]
    if (folder / f"{stem}.safetensors").is_file() or (folder / f"{stem}.bin").is_file():
        return []
    return [f"{folder.name}/{stem}.safetensors (or its .index.json with shards)"]


def _missing_diffusers(path: Path) -> list[str]:
    index = json.loads((path / "model_index.json").read_text())
    # Components model_index.json lists (non-null), plus the ones Wan2.1 I2V cannot do without.
    wanted = {k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0] is not None}
    wanted |= {"transformer", "vae", "text_encoder", "tokenizer", "scheduler"}
    missing = []
    for comp in sorted(wanted):
        required = DIFFUSERS_COMPONENT_FILES.get(comp, "config.json")
        if not (path / comp / required).is_file():
            missing.append(f"{comp}/{required}")
    for comp, stem in (("transformer", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                       ("text_encoder", "model"), ("image_encoder", "model")):
        if comp in wanted and (path / comp).is_dir():
            missing += _weights_missing(path / comp, stem)
    return missing


def _missing_original(path: Path) -> list[str]:
    missing = []
    model_type = "i2v"
    if (path / ORIGINAL_CONFIG).is_file():
        model_type = json.loads((path / ORIGINAL_CONFIG).read_text()).get("model_type", "i2v")
    else:
        missing.append(ORIGINAL_CONFIG)
    if (path / ORIGINAL_INDEX).is_file():
        shards = sorted(set(json.loads((path / ORIGINAL_INDEX).read_text())["weight_map"].values()))
        missing += [s for s in shards if not (path / s).is_file()]
    elif not (path / ORIGINAL_SINGLE).is_file():
        missing.append(f"{ORIGINAL_INDEX} (+ the shards it lists) or {ORIGINAL_SINGLE}")
    files = [ORIGINAL_VAE, ORIGINAL_T5] + ([ORIGINAL_CLIP] if model_type in ("i2v", "flf2v") else [])
    missing += [f for f in files if not (path / f).is_file()]
    if not (path / ORIGINAL_T5_TOKENIZER).is_dir():
        missing.append(ORIGINAL_T5_TOKENIZER + "/")
    return missing


def _config_class(path: Path) -> str | None:
    try:
        return json.loads((path / ORIGINAL_CONFIG).read_text()).get("_class_name")
    except (OSError, ValueError):
        return None


def _is_original_dir(path: Path) -> bool:
    if _config_class(path) == "WanModel":
        return True
    markers = (ORIGINAL_INDEX, ORIGINAL_SINGLE, ORIGINAL_VAE, ORIGINAL_T5, ORIGINAL_CLIP)
    return any((path / m).exists() for m in markers) or any(path.glob("diffusion_pytorch_model-*.safetensors"))


def _is_wan_single_file(path: Path) -> bool:
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    return any(p + "patch_embedding.weight" in keys for p in ("", *SINGLE_FILE_PREFIXES))


def detect_layout(path: str | Path) -> str:
    """Return "diffusers", "original" or "single-file"; raise WeightLayoutError naming every missing file."""
    path = Path(path)
    if not path.exists():
        raise WeightLayoutError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix == ".safetensors" and _is_wan_single_file(path):
            return "single-file"
        raise WeightLayoutError(
            f"{path}: a file, but not a Wan transformer .safetensors (expected original Wan keys such as "
            "'patch_embedding.weight', optionally prefixed 'model.diffusion_model.')")
    component = _config_class(path)
    if (path / "model_index.json").is_file():
        layout, missing = "diffusers", _missing_diffusers(path)
    elif component not in (None, "WanModel"):
        # e.g. transformer/ of a diffusers folder: its shard names look like the original release's.
        raise WeightLayoutError(
            f"{path}: a single diffusers component ({component}), not a whole model; pass the folder that holds "
            "model_index.json" + (f" ({path.parent})" if (path.parent / "model_index.json").is_file() else ""))
    elif _is_original_dir(path):
        layout, missing = "original", _missing_original(path)
    else:
        raise WeightLayoutError(
            f"{path}: not a recognised Wan weight layout.\n  found: {_listing(path)}\n"
            "  expected one of:\n"
            "    diffusers layout: model_index.json + " + ", ".join(f"{c}/" for c in DIFFUSERS_COMPONENT_FILES)
            + "\n    original layout: " + ", ".join([ORIGINAL_CONFIG, ORIGINAL_INDEX + " + shards", ORIGINAL_VAE,
                                                    ORIGINAL_T5, ORIGINAL_CLIP, ORIGINAL_T5_TOKENIZER + "/"])
            + "\n    single-file: a transformer .safetensors file (pass the file, not its folder)")
    if missing:
        raise WeightLayoutError(
            f"{path}: looks like the {layout} Wan layout but {len(missing)} file(s) are missing:\n"
            + "\n".join(f"  - {m}" for m in missing) + f"\n  found: {_listing(path)}")
    return layout


# ----------------------------------------------------------------------------------------------- loading


def load_state_dict_file(path: str | Path) -> StateDict:
    """Load a .safetensors or .pth/.pt state dict on CPU (``.pth`` with ``weights_only=True``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    return torch.load(path, weights_only=True, map_location="cpu")


def _merge_original_shards(path: Path) -> StateDict:
    if not (path / ORIGINAL_INDEX).is_file():
        return load_file(str(path / ORIGINAL_SINGLE), device="cpu")
    weight_map: dict[str, str] = json.loads((path / ORIGINAL_INDEX).read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (path / s).is_file()]
    if missing:
        raise WeightLayoutError(f"{path}: shards listed in {ORIGINAL_INDEX} are missing: {', '.join(missing)}")
    merged: StateDict = {}
    for shard in shards:
        merged.update(load_file(str(path / shard), device="cpu"))
    absent = sorted(set(weight_map) - set(merged))
    if absent:
        raise WeightLayoutError(f"{path}: keys in the index but in no shard: {absent[:10]}")
    return merged


def load_original_transformer_state_dict(path: str | Path) -> StateDict:
    """Merge the original release's transformer shards (via the index) and convert them to diffusers keys."""
    return convert_wan_transformer_to_diffusers(_merge_original_shards(Path(path)))


def _dequantize_scaled_fp8(sd: StateDict, dtype: torch.dtype) -> StateDict:
    """ComfyUI "scaled fp8": weight * per-tensor scale (``.scale_weight``); ``.scale_input`` is for activations."""
    if any(k.endswith(".comfy_quant") for k in sd):
        raise WeightLayoutError("ComfyUI 'comfy_quant' quantized files are not supported; use a bf16/fp8 file")
    out: StateDict = {}
    for key, value in sd.items():
        if key == "scaled_fp8" or key.endswith((".scale_weight", ".weight_scale", ".scale_input")):
            continue
        stem = key[: -len("weight")] if key.endswith(".weight") else None
        scale = sd.get(f"{stem}scale_weight", sd.get(f"{stem}weight_scale")) if stem else None
        out[key] = value.to(dtype) * scale.to(dtype) if scale is not None else value
    return out


def load_single_file_transformer_state_dict(path: str | Path, upcast_fp8: torch.dtype | None = None) -> StateDict:
    """Load a ComfyUI-style single-file transformer and convert it to diffusers keys.

    ``model.diffusion_model.`` / ``diffusion_model.`` prefixes are stripped; diffusers-keyed files pass
    through. fp8 tensors stay fp8 unless ``upcast_fp8`` names a dtype; ComfyUI "scaled fp8" files need that
    (their raw values are scaled).
    """
    sd = load_file(str(path), device="cpu")
    stripped: StateDict = {}
    for key, value in sd.items():
        for prefix in SINGLE_FILE_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        stripped[key] = value
    if "scaled_fp8" in stripped:
        if upcast_fp8 is None:
            raise WeightLayoutError(f"{path}: a ComfyUI scaled-fp8 file; pass upcast_fp8=torch.bfloat16 (or similar)")
        stripped = _dequantize_scaled_fp8(stripped, upcast_fp8)
    if upcast_fp8 is not None:
        fp8 = (torch.float8_e4m3fn, torch.float8_e5m2)
        stripped = {k: v.to(upcast_fp8) if v.dtype in fp8 else v for k, v in stripped.items()}
    if any(k.startswith("condition_embedder.") for k in stripped):
        return stripped  # already diffusers keys (a saved WanTransformer3DModel); converting again would break them
    return convert_wan_transformer_to_diffusers(stripped)


def load_original_vae_state_dict(path: str | Path) -> StateDict:
    """Load ``Wan2.1_VAE.pth`` (or a .safetensors with the same keys) and convert it to diffusers keys."""
    return convert_wan_vae_to_diffusers(load_state_dict_file(path))


# ----------------------------------------------------------------------------------------------- configs


def original_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes of an original-release transformer folder's shards, from their headers (nothing is loaded)."""
    files = [path / ORIGINAL_SINGLE] if not (path / ORIGINAL_INDEX).is_file() else sorted(
        {path / s for s in json.loads((path / ORIGINAL_INDEX).read_text())["weight_map"].values()})
    shapes: dict[str, list[int]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                shapes[key] = list(f.get_slice(key).get_shape())
    return shapes


def wan_transformer_config_from_original(
    config_json: str | Path | Mapping[str, Any], state_dict: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Original ``config.json`` (WanModel) -> ``WanTransformer3DModel`` kwargs.

    The original config omits text_dim and the CLIP width (WanModel hard-codes 4096 and 1280); they are read
    from the weights' shapes when ``state_dict`` (original keys, tensors or shapes) is given or when the
    shards sit beside ``config_json`` (a path to it or to its folder), else the real values are assumed.
    """
    shapes: dict[str, list[int]] = {}
    if isinstance(config_json, Mapping):
        cfg = dict(config_json)
    else:
        path = Path(config_json)
        path = path / ORIGINAL_CONFIG if path.is_dir() else path
        if (path.parent / ORIGINAL_INDEX).is_file() or (path.parent / ORIGINAL_SINGLE).is_file():
            shapes = original_shapes(path.parent)
        cfg = json.loads(path.read_text())
    for key, value in (state_dict or {}).items():
        shapes[key] = list(value.shape) if hasattr(value, "shape") else list(value)
    dim, heads = cfg["dim"], cfg["num_heads"]
    model_type = cfg.get("model_type", "t2v")
    i2v = model_type in ("i2v", "flf2v")
    if shapes and "img_emb.proj.0.weight" not in shapes:
        i2v = False  # no image cross-attention in the weights (Wan2.2-I2V's configs say "i2v" too, without CLIP)
    return {
        "patch_size": list(cfg.get("patch_size", (1, 2, 2))),
        "num_attention_heads": heads,
        "attention_head_dim": dim // heads,
        "in_channels": cfg["in_dim"],
        "out_channels": cfg["out_dim"],
        "text_dim": shapes.get("text_embedding.0.weight", [dim, 4096])[1],
        "freq_dim": cfg["freq_dim"],
        "ffn_dim": cfg["ffn_dim"],
        "num_layers": cfg["num_layers"],
        "cross_attn_norm": cfg.get("cross_attn_norm", True),
        "qk_norm": "rms_norm_across_heads" if cfg.get("qk_norm", True) else None,
        "eps": cfg.get("eps", 1e-6),
        "image_dim": shapes.get("img_emb.proj.0.weight", [1280])[0] if i2v else None,
        "added_kv_proj_dim": dim if i2v else None,
        "rope_max_seq_len": 1024,
        "pos_embed_seq_len": 257 * 2 if model_type == "flf2v" else None,
    }


def t5_config_from_original(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``UMT5Config`` kwargs read off an original umT5 encoder state dict (every size is in the shapes)."""
    vocab, d_model = sd["token_embedding.weight"].shape
    buckets, heads = sd["blocks.0.pos_embedding.embedding.weight"].shape
    layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    return {
        "vocab_size": vocab, "d_model": d_model, "d_kv": sd["blocks.0.attn.q.weight"].shape[0] // heads,
        "d_ff": sd["blocks.0.ffn.fc1.weight"].shape[0], "num_layers": layers, "num_decoder_layers": layers,
        "num_heads": heads, "relative_attention_num_buckets": buckets, "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-6, "tie_word_embeddings": False,
        "scalable_attention": True, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
    }


def clip_vision_config_from_original(sd: Mapping[str, torch.Tensor], num_heads: int | None = None) -> dict[str, Any]:
    """``CLIPVisionConfig`` kwargs for the CLIP ``.pth``'s vision tower.

    The head count is not in the shapes; by default the head width is ViT-H-14's 80 (1280 / 16 heads).
    GELU is exact (``nn.GELU()``) and LayerNorm eps 1e-5, as in Wan's ``clip_xlm_roberta_vit_h_14``.
    """
    hidden = sd["visual.patch_embedding.weight"].shape[0]
    num_heads = num_heads or max(1, hidden // 80)
    patch = sd["visual.patch_embedding.weight"].shape[-1]
    grid = round((sd["visual.pos_embedding"].shape[1] - 1) ** 0.5)
    layers = len({k.split(".")[2] for k in sd if k.startswith("visual.transformer.")})
    return {
        "hidden_size": hidden, "intermediate_size": sd["visual.transformer.0.mlp.0.weight"].shape[0],
        "num_hidden_layers": layers, "num_attention_heads": num_heads, "image_size": grid * patch,
        "patch_size": patch, "projection_dim": sd["visual.head"].shape[1], "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
    }


def wan_vae_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``AutoencoderKLWan`` kwargs read off a diffusers-keyed VAE state dict (latents mean/std: Wan's defaults)."""
    base = sd["encoder.conv_in.weight"].shape[0]
    stages: list[list[str]] = [[]]
    temporal: list[bool] = []
    for i in range(len({k.split(".")[2] for k in sd if k.startswith("encoder.down_blocks.")})):
        if f"encoder.down_blocks.{i}.resample.1.weight" in sd:
            temporal.append(f"encoder.down_blocks.{i}.time_conv.weight" in sd)
            stages.append([])
        else:
            stages[-1].append(f"encoder.down_blocks.{i}.conv2.weight")
    return {
        "base_dim": base, "z_dim": sd["post_quant_conv.weight"].shape[0], "num_res_blocks": len(stages[0]),
        "dim_mult": [sd[stage[-1]].shape[0] // base for stage in stages], "temperal_downsample": temporal,
        "attn_scales": [], "dropout": 0.0,
    }


def _build(cls: type, config: Any, sd: StateDict, dtype: torch.dtype) -> Any:
    """Build a transformers model without random init (meta device) and assign the weights strictly."""
    with torch.device("meta"):
        model = cls(config)
    names = set(model.state_dict())
    # transformers 5's CLIPVisionModel has no "vision_model." level although its checkpoints keep the prefix.
    sd = {k[len("vision_model."):] if k not in names and k[len("vision_model."):] in names else k: v
          for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    for module in model.modules():  # non-persistent buffers stay on meta: rebuild the only one CLIP has
        pos = getattr(module, "position_ids", None)
        if isinstance(pos, torch.Tensor) and pos.is_meta:
            module.position_ids = torch.arange(pos.shape[-1]).expand((1, -1))
    return model.to(dtype).eval()


def load_original_t5(path: str | Path, dtype: torch.dtype = torch.float32) -> UMT5EncoderModel:
    """``UMT5EncoderModel`` from the release folder's (or a file's) umT5 ``.pth``."""
    path = Path(path)
    sd = load_state_dict_file(path / ORIGINAL_T5 if path.is_dir() else path)
    return _build(UMT5EncoderModel, UMT5Config(**t5_config_from_original(sd)), t5_original_to_hf(sd), dtype)


def load_original_clip_vision(
    path: str | Path, dtype: torch.dtype = torch.float32, num_heads: int | None = None, projection: bool = False
) -> CLIPVisionModel | CLIPVisionModelWithProjection:
    """CLIP vision tower from the release folder's (or a file's) CLIP ``.pth``; Wan uses hidden_states[-2]."""
    path = Path(path)
    sd = load_state_dict_file(path / ORIGINAL_CLIP if path.is_dir() else path)
    config = CLIPVisionConfig(**clip_vision_config_from_original(sd, num_heads))
    cls = CLIPVisionModelWithProjection if projection else CLIPVisionModel
    return _build(cls, config, clip_vision_original_to_hf(sd, projection=projection), dtype)


def original_clip_image_processor(image_size: int | str | Path = 224) -> CLIPImageProcessor:
    """Wan's own CLIP preprocessing: bicubic resize to a square (no crop), OpenAI CLIP mean/std.

    (The diffusers repo's processor resizes the short side and centre-crops instead.) ``image_size`` is a
    size, or the release folder / CLIP ``.pth`` to read it from (tiny test models are not 224).
    """
    if not isinstance(image_size, int):
        path = Path(image_size)
        # mmap: only the two tensors read here are paged in, not the whole 4.7 GB file.
        sd = torch.load(path / ORIGINAL_CLIP if path.is_dir() else path, weights_only=True, map_location="cpu",
                        mmap=True)
        image_size = clip_vision_config_from_original(sd)["image_size"]
    return CLIPImageProcessor(
        do_resize=True, size={"height": image_size, "width": image_size}, resample=3, do_center_crop=False,
        do_rescale=True, do_normalize=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711], do_convert_rgb=True)
