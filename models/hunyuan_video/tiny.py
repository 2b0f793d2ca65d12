"""Build tiny random HunyuanVideo-I2V models in the weight layouts users download (offline, in seconds).

Structurally real, only narrow: the 33-channel `latent_concat` transformer (double- and single-stream
blocks, token refiner), the causal 3D VAE, a LLaVA (Llama + CLIP vision tower) text encoder that sees the
conditioning image through the prompt template, and a CLIP text model for the pooled projection. The
tokenizers are byte-level BPEs trained here on a small corpus, with the special tokens the template uses.
The same seed gives the same weights in every layout, so tests can check that the layouts load alike.

`variant="token_replace"` writes the 16-channel variant instead (the adapter refuses it; tests check that).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoImageToVideoPipeline,
    HunyuanVideoTransformer3DModel,
)
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from config.atomic import atomic_path
from models.hunyuan_video import layouts as hl
from models.loading import CLIPImageProcessor
from models.tiny import randomize

LAYOUTS = ("diffusers", "original", "single-file")
VARIANTS = ("latent_concat", "token_replace")

# Real HunyuanVideo-I2V in brackets.
TINY_LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,  # [4096, 32]
                  num_key_value_heads=1, max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=500000.0)
# 28 / 14 -> 4 image tokens [336 / 14 -> 576]
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   image_size=28, patch_size=14, projection_dim=32)
TINY_CLIP_TEXT = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,  # [768]
                      max_position_embeddings=77, projection_dim=24)
TINY_TRANSFORMER = dict(in_channels=33, out_channels=16, num_attention_heads=2, attention_head_dim=16,  # [24 x 128]
                        num_layers=2, num_single_layers=2, num_refiner_layers=1, mlp_ratio=2.0,  # [20, 40, 2, 4]
                        patch_size=2, patch_size_t=1, qk_norm="rms_norm", guidance_embeds=False,
                        text_embed_dim=TINY_LLAMA["hidden_size"], pooled_projection_dim=TINY_CLIP_TEXT["hidden_size"],
                        rope_theta=256.0, rope_axes_dim=(4, 6, 6), image_condition_type="latent_concat")
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 16, 16, 16),  # [128..512]
                layers_per_block=1, norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
                temporal_compression_ratio=4, mid_block_add_attention=True)
SCHEDULER = dict(num_train_timesteps=1000, shift=7.0)

LLAMA_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                 "<image>", "<pad>"]
CLIP_SPECIAL = ["<|startoftext|>", "<|endoftext|>"]
_WORDS = ("a the of and in on with to is at from by person man woman child dog cat bird car street park sky red "
          "blue green yellow black white jacket shirt hat necklace square box walks runs turns looks camera slow "
          "close wide shot frame video motion bright dark low quality blurry aerial view overexposed deformation "
          "poor composition bad hands teeth eyes limbs distortion").split()


def _corpus(extra: str) -> list[str]:
    rng = random.Random(1234)  # fixed: the tokenizers do not depend on the weight seed
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 14))) for _ in range(2000)]
    return lines + [extra] * 50


def _llama_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE like Llama 3's, with its header/eot tokens, LLaVA's <image> and a pad token."""
    template = hl.PROMPT_TEMPLATE.replace("{}", "")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=LLAMA_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(template), trainer)
    tok.add_tokens([AddedToken("\n\n", normalized=False)])  # one token, as in Llama 3 (the crop counts on it)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                   pad_token="<pad>", model_max_length=1024, padding_side="right")


def _clip_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=CLIP_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(""), trainer)
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", model_max_length=77)


class TinyHunyuan:
    """All components of one tiny HunyuanVideo-I2V model, built from a seed (weights in fp32)."""

    def __init__(self, seed: int, variant: str = "latent_concat") -> None:
        self.tokenizer = _llama_tokenizer()
        self.tokenizer_2 = _clip_tokenizer()
        gen = torch.Generator().manual_seed(seed)
        tcfg = dict(TINY_TRANSFORMER)
        if variant == "token_replace":
            tcfg.update(in_channels=16, image_condition_type="token_replace", guidance_embeds=True)
        self.transformer = HunyuanVideoTransformer3DModel(**tcfg)
        self.vae = AutoencoderKLHunyuanVideo(**TINY_VAE)
        tok = self.tokenizer
        vocab = 64 * math.ceil(len(tok) / 64)
        text = LlamaConfig(vocab_size=vocab, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id, **TINY_LLAMA)
        config = LlavaConfig(text_config=text, vision_config=CLIPVisionConfig(**TINY_VISION),
                             image_token_index=tok.convert_tokens_to_ids("<image>"),
                             image_seq_length=(TINY_VISION["image_size"] // TINY_VISION["patch_size"]) ** 2,
                             pad_token_id=tok.pad_token_id)
        self.text_encoder = LlavaForConditionalGeneration(config)
        tok2 = self.tokenizer_2
        self.text_encoder_2 = CLIPTextModel(CLIPTextConfig(
            vocab_size=64 * math.ceil(len(tok2) / 64), bos_token_id=tok2.bos_token_id, eos_token_id=tok2.eos_token_id,
            pad_token_id=tok2.pad_token_id, **TINY_CLIP_TEXT))
        for model in (self.transformer, self.vae, self.text_encoder, self.text_encoder_2):
            randomize(model, gen, norm_like_1d=True)
            model.eval()
        size = TINY_VISION["image_size"]
        self.image_processor = CLIPImageProcessor(
            do_resize=True, size={"shortest_edge": size}, resample=3, do_center_crop=True,
            crop_size={"height": size, "width": size}, do_rescale=True, do_normalize=True, do_convert_rgb=True,
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
        self.scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER)


def _write_diffusers(m: TinyHunyuan, out: Path) -> Path:
    pipe = HunyuanVideoImageToVideoPipeline(
        text_encoder=m.text_encoder, tokenizer=m.tokenizer, transformer=m.transformer, vae=m.vae,
        scheduler=m.scheduler, text_encoder_2=m.text_encoder_2, tokenizer_2=m.tokenizer_2,
        image_processor=m.image_processor)
    pipe.save_pretrained(out, safe_serialization=True)
    # Without torchvision transformers saves the PIL variant's name; the real repo says this one.
    index = json.loads((out / "model_index.json").read_text())
    index["image_processor"] = ["transformers", "CLIPImageProcessor"]
    (out / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return out


def _write_original(m: TinyHunyuan, out: Path) -> Path:
    """Tencent's release folder: DeepSpeed-style transformer .pt, VAE .pt + config, HF-format text encoders."""
    sub = out / hl.ORIGINAL_MODEL_DIR
    (sub / "transformers").mkdir(parents=True)
    (sub / "vae").mkdir()
    state = hl.transformer_diffusers_to_original(m.transformer.state_dict())
    torch.save({"module": state}, sub / hl.ORIGINAL_TRANSFORMER)
    torch.save({k: v.clone() for k, v in m.vae.state_dict().items()}, sub / hl.ORIGINAL_VAE)
    (sub / hl.ORIGINAL_VAE_CONFIG).write_text(json.dumps(hl.original_vae_config(dict(m.vae.config)), indent=2))
    llava = out / hl.ORIGINAL_TEXT_ENCODER
    m.text_encoder.save_pretrained(llava)
    m.tokenizer.save_pretrained(llava)
    m.image_processor.save_pretrained(llava)
    clip = out / hl.ORIGINAL_TEXT_ENCODER_2
    m.text_encoder_2.save_pretrained(clip)
    m.tokenizer_2.save_pretrained(clip)
    return out


def single_file_name(dtype: str) -> str:
    return f"hunyuan_video_i2v_tiny_{dtype}.safetensors"


def _write_single_file(m: TinyHunyuan, out: Path, dtype: str) -> Path:
    """A ComfyUI-style file: original key names, bf16, fp32 or fp8 (e4m3fn matrices, 1-D tensors in bf16)."""
    out.mkdir(parents=True)
    dt = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp8": torch.float8_e4m3fn}[dtype]
    state = hl.transformer_diffusers_to_original(m.transformer.state_dict())
    save_file({k: v.to(torch.bfloat16 if dt == torch.float8_e4m3fn and v.ndim < 2 else dt).contiguous()
               for k, v in state.items()}, str(out / single_file_name(dtype)))
    return out / single_file_name(dtype)


def build_tiny_hunyuan(out_dir: str | Path, layout: str, seed: int = 0, variant: str = "latent_concat",
                       dtype: str = "bf16") -> Path:
    """Write a tiny HunyuanVideo-I2V model in `layout` to `out_dir` (must not exist or be empty), atomically;
    return the folder (the file for single-file; `dtype` applies to that file only)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not empty")
    m = TinyHunyuan(seed, variant)
    with atomic_path(out_dir) as stage:  # built beside the target, renamed when complete
        if layout == "diffusers":
            result = _write_diffusers(m, stage)
        elif layout == "original":
            result = _write_original(m, stage)
        else:
            result = _write_single_file(m, stage, dtype)
    return out_dir / result.relative_to(stage)
