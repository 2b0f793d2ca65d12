"""Build tiny random Wan2.1-I2V models in the weight layouts users download (offline, in seconds).

The models are structurally real (36-channel I2V transformer with image cross-attention, the 3-stage Wan
VAE with z_dim 16, umT5 encoder, CLIP ViT vision tower, offline-trained sentencepiece tokenizers), only
narrow. The same seed gives the same weights in every layout, so tests can check that all layouts load
to the same model.
"""

from __future__ import annotations

import copy
import io
import json
import math
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
from safetensors.torch import save_file
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    T5Tokenizer,
    UMT5Config,
    UMT5EncoderModel,
    XLMRobertaTokenizer,
)

from config.atomic import atomic_path
from models.loading import CLIPImageProcessor
from models.tiny import fill_like, randomize
from models.wan import layouts as wl

LAYOUTS = ("diffusers", "original", "single-file")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp8": torch.float8_e4m3fn}
FILE_SUFFIX = {"bf16": "bf16", "fp16": "fp16", "fp32": "fp32", "fp8": "fp8_e4m3fn"}

# Real Wan2.1-I2V-14B in brackets.
# umT5 [4096, 64, 10240, 24, 64]
TINY_T5 = dict(d_model=24, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=2,
               relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
               layer_norm_epsilon=1e-6, tie_word_embeddings=False, scalable_attention=True, pad_token_id=0,
               eos_token_id=1, decoder_start_token_id=0)
T5_EXTRA_IDS = 8  # [300 sentinel tokens]
# Head width 80 as in ViT-H-14 (1280 = 16 x 80), so the head count can be read off the .pth as in the real model.
# CLIP vision [1280, 5120, 32, 16, 224, 14, 1024]
TINY_CLIP = dict(hidden_size=160, intermediate_size=640, num_hidden_layers=3, num_attention_heads=2,
                 image_size=28, patch_size=14, projection_dim=16, hidden_act="gelu", layer_norm_eps=1e-5)
TINY_XLMR = dict(dim=16, heads=2, layers=2, max_text_len=514)  # CLIP text tower [1024, 16, 24, 514]
TINY_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,  # [40 x 128]
                        in_channels=36, out_channels=16, text_dim=TINY_T5["d_model"], freq_dim=32,  # [4096, 256]
                        ffn_dim=64, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",  # [13824, 40]
                        eps=1e-6, image_dim=TINY_CLIP["hidden_size"], added_kv_proj_dim=32,  # [1280, 5120]
                        rope_max_seq_len=1024, pos_embed_seq_len=None)
# diffusers' VAE converter hard-codes the decoder layout of dim_mult [1, 2, 4, 4] with 2 res blocks: keep them.
TINY_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],  # [96]
                temperal_downsample=[False, True, True])
SCHEDULER = dict(num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                 solver_order=2, solver_type="bh2", timestep_spacing="linspace", final_sigmas_type="zero")
# The real transformer is sharded (14 files in the diffusers repo, 7 in the original): shard the tiny one too.
# This is the shard size of the default sizes; a larger build gets shards of a third of its transformer.
MAX_SHARD = 150_000  # bytes ("150KB")
SHARDS = 3
# `sizes` sections of build_tiny_wan -> the defaults they override.
SIZE_DEFAULTS = {"transformer": TINY_TRANSFORMER, "t5": TINY_T5, "clip": TINY_CLIP, "xlmr": TINY_XLMR, "vae": TINY_VAE}
# Set by the I2V channel layout (16 noisy + 4 mask + 16 condition latents) and diffusers' VAE converter.
FIXED_SIZES = {"transformer": ("in_channels", "out_channels"), "vae": ("z_dim", "dim_mult", "num_res_blocks")}
_WORDS = ("a the of and in on with to is at from by person man woman child dog cat bird horse car bike street road "
          "city park forest beach sea river sky cloud sun light shadow night day red blue green yellow black white "
          "jacket shirt dress hat necklace glasses bag ball cup table chair window door wall tree flower grass snow "
          "rain water fire smoke walks runs jumps turns looks holds wears sits stands dances smiles camera slow fast "
          "close wide shot frame video motion static bright dark detail quality blurry low worst ugly style").split()


# ------------------------------------------------------------------------------------------ sizes

Sizes = dict[str, dict[str, Any]]


def resolve_sizes(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Sizes:
    """The component configs of one build: the TINY_* defaults (copied, never changed) updated by
    ``overrides`` ({"transformer": {...}, "t5": {...}, "clip": {...}, "xlmr": {...}, "vae": {...}}).

    The transformer's dependent widths follow: text_dim = t5 d_model, image_dim = clip hidden_size,
    added_kv_proj_dim = heads x head_dim. Unknown sections or keys, fixed keys (FIXED_SIZES) and a
    dependent width that contradicts its source raise ValueError.
    """
    if not isinstance(overrides or {}, Mapping) or not all(isinstance(v, Mapping) for v in (overrides or {}).values()):
        raise ValueError(f"sizes must map section names to dicts of config keys, not {overrides!r}")
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(SIZE_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown sizes section(s) {sorted(unknown)}; valid: {sorted(SIZE_DEFAULTS)}")
    sizes: Sizes = {}
    for section, defaults in SIZE_DEFAULTS.items():
        given = dict(overrides.get(section) or {})
        bad = sorted(set(given) - set(defaults))
        if bad:
            raise ValueError(f"sizes[{section!r}]: unknown key(s) {bad}; valid: {sorted(defaults)}")
        fixed = sorted(k for k in FIXED_SIZES.get(section, ()) if k in given and given[k] != defaults[k])
        if fixed:
            raise ValueError(f"sizes[{section!r}]: {fixed} are fixed by the Wan2.1-I2V layout")
        sizes[section] = {**copy.deepcopy(defaults), **given}
    t = sizes["transformer"]
    derived = {"text_dim": sizes["t5"]["d_model"], "image_dim": sizes["clip"]["hidden_size"],
               "added_kv_proj_dim": t["num_attention_heads"] * t["attention_head_dim"]}
    given = overrides.get("transformer") or {}
    clash = {k: (given[k], v) for k, v in derived.items() if k in given and given[k] != v}
    if clash:
        raise ValueError(f"sizes['transformer']: {clash} (given, implied) contradict the other components")
    t.update(derived)
    return sizes


# ------------------------------------------------------------------------------------------ tokenizers


def _sentences() -> list[str]:
    rng = random.Random(1234)  # fixed: the tokenizers do not depend on the weight seed
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = list(_WORDS) + ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(400)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) for _ in range(3000)]


def _train_spm(**ids: int) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_sentences()), model_writer=model, vocab_size=400, model_type="unigram",
        character_coverage=1.0, num_threads=1, minloglevel=2, **ids)
    return model.getvalue()


def _tokenizers(work: Path) -> tuple[T5Tokenizer, XLMRobertaTokenizer, bytes, bytes]:
    """umT5 tokenizer (pad 0, eos 1, unk 2, sentinels at the end) and XLM-R's (fairseq ids, +1 offset)."""
    t5_spm = _train_spm(pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    xlmr_spm = _train_spm(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    (work / "t5").mkdir()
    (work / "t5" / "spiece.model").write_bytes(t5_spm)
    (work / "xlmr").mkdir()
    (work / "xlmr" / "sentencepiece.bpe.model").write_bytes(xlmr_spm)
    t5 = T5Tokenizer.from_pretrained(work / "t5", extra_ids=T5_EXTRA_IDS)
    xlmr = XLMRobertaTokenizer.from_pretrained(work / "xlmr")
    return t5, xlmr, t5_spm, xlmr_spm


# ------------------------------------------------------------------------------------------ weights


def _textual_tower(vocab: int, gen: torch.Generator, sizes: Sizes) -> dict[str, torch.Tensor]:
    """CLIP text tower keys of Wan's XLMRobertaWithHead (wan/modules/xlm_roberta.py, clip.py); loaders skip it."""
    xlmr = sizes["xlmr"]
    d, out = xlmr["dim"], sizes["clip"]["projection_dim"]
    shapes = {"textual.token_embedding.weight": (vocab, d), "textual.type_embedding.weight": (1, d),
              "textual.pos_embedding.weight": (xlmr["max_text_len"], d)}
    for i in range(xlmr["layers"]):
        b = f"textual.blocks.{i}."
        for n in "qkvo":
            shapes.update({f"{b}attn.{n}.weight": (d, d), f"{b}attn.{n}.bias": (d,)})
        shapes.update({f"{b}norm1.weight": (d,), f"{b}norm1.bias": (d,), f"{b}ffn.0.weight": (4 * d, d),
                       f"{b}ffn.0.bias": (4 * d,), f"{b}ffn.2.weight": (d, 4 * d), f"{b}ffn.2.bias": (d,),
                       f"{b}norm2.weight": (d,), f"{b}norm2.bias": (d,)})
    mid = (d + out) // 2
    shapes.update({"textual.norm.weight": (d,), "textual.norm.bias": (d,), "textual.head.0.weight": (mid, d),
                   "textual.head.2.weight": (out, mid)})
    return {k: fill_like(k, torch.Size(s), gen) for k, s in shapes.items()}


class TinyWan:
    """All components of one tiny Wan2.1-I2V model, built from a seed (weights in fp32); `sizes` from
    `resolve_sizes` (default: the TINY_* constants)."""

    def __init__(self, seed: int, work: Path, sizes: Sizes | None = None) -> None:
        self.sizes = sizes = sizes or resolve_sizes()
        self.tokenizer, self.clip_tokenizer, self.t5_spm, self.xlmr_spm = _tokenizers(work)
        gen = torch.Generator().manual_seed(seed)
        self.transformer = WanTransformer3DModel(**sizes["transformer"])
        self.vae = AutoencoderKLWan(**sizes["vae"])
        vocab = 64 * math.ceil(len(self.tokenizer) / 64)  # padded past the tokenizer, like 256384 > 256300
        self.text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=vocab, **sizes["t5"]))
        self.image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**sizes["clip"]))
        for model in (self.transformer, self.vae, self.text_encoder, self.image_encoder):
            randomize(model, gen)
            model.eval()
        with torch.no_grad():  # the original .pth is bf16: keep both layouts bit-identical
            for p in self.text_encoder.parameters():
                p.copy_(p.to(torch.bfloat16).float())
        self.textual = _textual_tower(len(self.clip_tokenizer), gen, sizes)
        size = sizes["clip"]["image_size"]
        self.image_processor = CLIPImageProcessor(
            do_resize=True, size={"shortest_edge": size}, resample=3, do_center_crop=True,
            crop_size={"height": size, "width": size}, do_rescale=True, do_normalize=True, do_convert_rgb=True,
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
        self.scheduler = UniPCMultistepScheduler(**SCHEDULER)

    def original_config(self) -> dict:
        """The original release's config.json keys (WanModel); text_dim / CLIP width are not in it."""
        t = self.sizes["transformer"]
        dim = t["num_attention_heads"] * t["attention_head_dim"]
        return {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": dim, "eps": t["eps"],
                "ffn_dim": t["ffn_dim"], "freq_dim": t["freq_dim"], "in_dim": t["in_channels"], "model_type": "i2v",
                "num_heads": t["num_attention_heads"], "num_layers": t["num_layers"], "out_dim": t["out_channels"],
                "text_len": wl.WAN_TEXT_LEN}

    def original_transformer(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        sd = wl.wan_transformer_diffusers_to_original(self.transformer.state_dict())
        return {k: _cast(k, v, dtype) for k, v in sd.items()}


def _cast(key: str, value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # fp8 files keep 1-D tensors (biases, norms) in bf16; matrices, convs and modulation tables go fp8.
    if dtype == torch.float8_e4m3fn and value.ndim < 2:
        dtype = torch.bfloat16
    return value.detach().to(dtype).contiguous().clone()


# ------------------------------------------------------------------------------------------ writers


def _write_diffusers(m: TinyWan, out: Path, dtype: torch.dtype) -> Path:
    with torch.no_grad():  # cast every tensor (Module.to warns about diffusers' keep-in-fp32 list)
        for param in m.transformer.parameters():
            param.data = param.data.to(dtype)
    pipe = WanImageToVideoPipeline(
        tokenizer=m.tokenizer, text_encoder=m.text_encoder, vae=m.vae, scheduler=m.scheduler,
        image_processor=m.image_processor, image_encoder=m.image_encoder, transformer=m.transformer)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    shard = _shard_size(m.transformer)
    m.transformer.save_pretrained(out / "transformer", safe_serialization=True, max_shard_size=shard)
    (out / "tokenizer" / "spiece.model").write_bytes(m.t5_spm)  # the real folder ships it beside tokenizer.json
    # Without torchvision transformers saves the PIL variant's name; the real repo (and loading) says this one.
    index = json.loads((out / "model_index.json").read_text())
    index["image_processor"] = ["transformers", "CLIPImageProcessor"]
    (out / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return out


def _shard_size(model: torch.nn.Module) -> int:
    """MAX_SHARD, or a third of a larger model, so a larger build still writes about SHARDS files."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return max(MAX_SHARD, math.ceil(total / SHARDS))


def _save_tokenizers(m: TinyWan, out: Path) -> None:
    t5_dir, xlmr_dir = out / wl.ORIGINAL_T5_TOKENIZER, out / wl.ORIGINAL_CLIP_TOKENIZER
    m.tokenizer.save_pretrained(t5_dir)
    (t5_dir / "spiece.model").write_bytes(m.t5_spm)
    m.clip_tokenizer.save_pretrained(xlmr_dir)
    (xlmr_dir / "sentencepiece.bpe.model").write_bytes(m.xlmr_spm)


def _write_original(m: TinyWan, out: Path, dtype: torch.dtype) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / wl.ORIGINAL_CONFIG).write_text(json.dumps(m.original_config(), indent=2) + "\n")
    sd = m.original_transformer(dtype)
    keys = list(sd)
    cut = next(i for i, k in enumerate(keys) if k.startswith("blocks.1."))  # shard at a block boundary
    shards = [keys[:cut], keys[cut:]]
    weight_map, total = {}, 0
    for i, part in enumerate(shards, 1):
        name = f"diffusion_pytorch_model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: sd[k] for k in part}, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
        total += sum(sd[k].numel() * sd[k].element_size() for k in part)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / wl.ORIGINAL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    # The real VAE and CLIP files are fp32, the umT5 encoder bf16 (its file name says so).
    vae = wl.wan_vae_diffusers_to_original(m.vae.state_dict())
    torch.save({k: _cast(k, v, torch.float32) for k, v in vae.items()}, out / wl.ORIGINAL_VAE)
    t5 = wl.t5_hf_to_original(m.text_encoder.state_dict())
    torch.save({k: _cast(k, v, torch.bfloat16) for k, v in t5.items()}, out / wl.ORIGINAL_T5)
    clip = {"log_scale": torch.tensor(math.log(1 / 0.07))}
    clip.update(wl.clip_vision_hf_to_original(m.image_encoder.state_dict()))
    clip.update(m.textual)
    torch.save({k: _cast(k, v, torch.float32) for k, v in clip.items()}, out / wl.ORIGINAL_CLIP)
    _save_tokenizers(m, out)
    return out


def single_file_name(dtype: str) -> str:
    """ComfyUI-style name, e.g. wan2.1_i2v_480p_tiny_fp8_e4m3fn.safetensors."""
    return f"wan2.1_i2v_480p_tiny_{FILE_SUFFIX[dtype]}.safetensors"


def _write_single_file(m: TinyWan, out: Path, dtype: str, prefixed: bool) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    prefix = "model.diffusion_model." if prefixed else ""
    sd = {prefix + k: v for k, v in m.original_transformer(DTYPES[dtype]).items()}
    save_file(sd, str(out / single_file_name(dtype)))
    return out / single_file_name(dtype)


def build_tiny_wan(out_dir: str | Path, layout: str, seed: int = 0, dtype: str = "fp32", prefixed: bool = False,
                   overwrite: bool = False, sizes: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write a tiny Wan2.1-I2V model in ``layout`` to ``out_dir`` atomically; return the folder (the file for
    single-file). ``dtype`` applies to the transformer; fp8 (e4m3fn) only exists for single-file.

    ``sizes`` overrides component configs for this build only, e.g. ``{"transformer": {"num_layers": 8},
    "t5": {"d_model": 512}}`` (see `resolve_sizes`; the module's TINY_* defaults are never changed).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, not {dtype!r}")
    if dtype == "fp8" and layout != "single-file":
        raise ValueError("fp8 storage exists only for the single-file layout")
    resolved = resolve_sizes(sizes)
    clip = resolved["clip"]
    if layout == "original" and clip["hidden_size"] != 80 * clip["num_attention_heads"]:
        # The CLIP .pth has no head count: loaders read it off the width, assuming ViT-H-14's head width 80.
        raise ValueError(f"the original layout needs a CLIP head width of 80, not "
                         f"{clip['hidden_size']} / {clip['num_attention_heads']} heads")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty (overwrite=True / --force replaces it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        m = TinyWan(seed, Path(work), resolved)
    with atomic_path(out_dir) as stage:  # built beside the target, renamed when complete
        if layout == "diffusers":
            result = _write_diffusers(m, stage, DTYPES[dtype])
        elif layout == "original":
            result = _write_original(m, stage, DTYPES[dtype])
        else:
            result = _write_single_file(m, stage, dtype, prefixed)
    return out_dir / result.relative_to(stage)
