"""Tiny random Wan2.2-I2V-A14B models in the three layouts users download (offline, seconds), for tests and demos.

Wan2.1's tiny components (models.wan.tiny.TinyWan: VAE, umT5, tokenizer) plus two narrow 36-channel transformers
without image cross-attention, the high-noise expert and the low-noise one, drawn from one seed. The same seed gives
the same weights in every layout, so tests can check that every layout loads to the same model.

Layouts: ``diffusers`` (model_index.json with boundary_ratio 0.9, transformer/ + transformer_2/, no image_encoder/),
``original`` (high_noise_model/ + low_noise_model/ shards, Wan2.1_VAE.pth, the umT5 .pth, google/umt5-xxl/) and
``single-file``: the original folder plus one ComfyUI-style file per expert (wan2.2_i2v_{high,low}_noise_...).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
from safetensors.torch import save_file

from config.atomic import atomic_path
from models.tiny import randomize
from models.wan import layouts as wl
from models.wan import tiny as wan_tiny
from models.wan22.layouts import DIFFUSERS_DIRS, ORIGINAL_DIRS
from models.wan22.spec import BOUNDARY_RATIO, EXPERTS, SAMPLE_SHIFT

LAYOUTS = ("diffusers", "original", "single-file")
SINGLE_FILE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                      "fp8": torch.float8_e4m3fn}


def single_file_name(expert: str, dtype: str = "fp32") -> str:
    """Comfy-Org's naming, e.g. wan2.2_i2v_high_noise_tiny_fp16.safetensors."""
    return f"wan2.2_i2v_{expert}_tiny_{wan_tiny.FILE_SUFFIX[dtype]}.safetensors"


def tiny_experts(seed: int, text_dim: int) -> dict[str, WanTransformer3DModel]:
    """{expert name: transformer} (fp32): Wan2.1's tiny config without image cross-attention, one stream per expert."""
    config = {**wan_tiny.TINY_TRANSFORMER, "text_dim": text_dim, "image_dim": None, "added_kv_proj_dim": None}
    out = {}
    for i, expert in enumerate(EXPERTS):
        model = WanTransformer3DModel(**config)
        randomize(model, torch.Generator().manual_seed(1000 * seed + 17 + i))
        out[expert.name] = model.eval()
    return out


def _cast(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.float8_e4m3fn and value.ndim < 2:
        dtype = torch.bfloat16  # fp8 files keep 1-D tensors (biases, norms) in bf16, as ComfyUI's do
    return value.detach().to(dtype).contiguous().clone()


def _original_config(model: WanTransformer3DModel) -> dict:
    c = model.config
    return {"_class_name": "WanModel", "_diffusers_version": "0.33.0",
            "dim": c.num_attention_heads * c.attention_head_dim, "eps": c.eps, "ffn_dim": c.ffn_dim,
            "freq_dim": c.freq_dim, "in_dim": c.in_channels, "model_type": "i2v",
            "num_heads": c.num_attention_heads, "num_layers": c.num_layers, "out_dim": c.out_channels,
            "text_len": wl.WAN_TEXT_LEN}


def _write_diffusers(m: wan_tiny.TinyWan, experts: dict, out: Path) -> None:
    pipe = WanImageToVideoPipeline(
        tokenizer=m.tokenizer, text_encoder=m.text_encoder, vae=m.vae, scheduler=m.scheduler, image_processor=None,
        image_encoder=None, transformer=experts["high_noise"], transformer_2=experts["low_noise"],
        boundary_ratio=BOUNDARY_RATIO)
    pipe.save_pretrained(out, safe_serialization=True)
    for expert, sub in DIFFUSERS_DIRS.items():  # sharded, as the real repo's are
        (out / sub / "diffusion_pytorch_model.safetensors").unlink()
        experts[expert].save_pretrained(out / sub, safe_serialization=True, max_shard_size=wan_tiny.MAX_SHARD)
    (out / "tokenizer" / "spiece.model").write_bytes(m.t5_spm)


def _write_expert_folder(model: WanTransformer3DModel, folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / wl.ORIGINAL_CONFIG).write_text(json.dumps(_original_config(model), indent=2) + "\n")
    sd = {k: _cast(v, torch.float32) for k, v in wl.wan_transformer_diffusers_to_original(model.state_dict()).items()}
    keys = list(sd)
    cut = next(i for i, k in enumerate(keys) if k.startswith("blocks.1."))  # shard at a block boundary
    weight_map = {}
    for i, part in enumerate((keys[:cut], keys[cut:]), 1):
        name = f"diffusion_pytorch_model-{i:05d}-of-00002.safetensors"
        save_file({k: sd[k] for k in part}, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in sd.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / wl.ORIGINAL_INDEX).write_text(json.dumps(index, indent=2) + "\n")


def _write_original(m: wan_tiny.TinyWan, experts: dict, out: Path) -> None:
    out.mkdir(parents=True)
    for expert, sub in ORIGINAL_DIRS.items():
        _write_expert_folder(experts[expert], out / sub)
    # The real VAE file is fp32 and the umT5 encoder bf16 (its file name says so), as in Wan2.1's release.
    vae = wl.wan_vae_diffusers_to_original(m.vae.state_dict())
    torch.save({k: _cast(v, torch.float32) for k, v in vae.items()}, out / wl.ORIGINAL_VAE)
    t5 = wl.t5_hf_to_original(m.text_encoder.state_dict())
    torch.save({k: _cast(v, torch.bfloat16) for k, v in t5.items()}, out / wl.ORIGINAL_T5)
    m.tokenizer.save_pretrained(out / wl.ORIGINAL_T5_TOKENIZER)
    (out / wl.ORIGINAL_T5_TOKENIZER / "spiece.model").write_bytes(m.t5_spm)


def _write_single_files(experts: dict, out: Path, dtype: str) -> None:
    for name, model in experts.items():
        sd = wl.wan_transformer_diffusers_to_original(model.state_dict())
        tensors = {k: _cast(v, SINGLE_FILE_DTYPES[dtype]) for k, v in sd.items()}
        save_file(tensors, str(out / single_file_name(name, dtype)))


def build_tiny_wan22(out_dir: str | Path, layout: str = "diffusers", seed: int = 0, dtype: str = "fp32") -> Path:
    """Write a tiny Wan2.2-I2V-A14B model in ``layout`` to ``out_dir`` atomically and return the folder (for
    ``single-file``, an original folder holding the two expert files too: `single_file_name`)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if dtype not in SINGLE_FILE_DTYPES or (dtype != "fp32" and layout != "single-file"):
        raise ValueError(f"dtype {dtype!r}: fp32, or bf16 / fp16 / fp8 for the single-file layout")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty")
    with tempfile.TemporaryDirectory() as work:
        m = wan_tiny.TinyWan(seed, Path(work))
    m.scheduler = m.scheduler.from_config({**m.scheduler.config, "flow_shift": SAMPLE_SHIFT})
    experts = tiny_experts(seed, m.sizes["t5"]["d_model"])
    with atomic_path(out_dir) as stage:  # built beside the target, renamed when complete
        if layout == "diffusers":
            _write_diffusers(m, experts, stage)
        else:
            _write_original(m, experts, stage)
            if layout == "single-file":
                _write_single_files(experts, stage, dtype)
    return out_dir
