"""Key maps of the Wan2.1 components whose original checkpoints diffusers does not convert, and the inverses.

* umT5 (``models_t5_umt5-xxl-enc-bf16.pth``) <-> transformers ``UMT5EncoderModel``, after Wan2.1's
  ``wan/modules/t5.py``;
* the CLIP vision tower of ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` <-> ``CLIPVisionModel``
  (``WithProjection``), after ``wan/modules/clip.py``;
* diffusers -> original for the transformer and the VAE: the inverses of diffusers' own converters, used to
  write original-layout / ComfyUI files (test fixtures, exports).

Every map raises on a key it does not know, so a layout change shows up as an error, not as silently
missing weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

StateDict = dict[str, torch.Tensor]




def _remap(sd: Mapping[str, torch.Tensor], fixed: Mapping[str, str], block: re.Pattern[str],
           block_fmt: str, block_map: Mapping[str, str], what: str) -> StateDict:
    """Rename keys: exact names via ``fixed``, per-block suffixes via ``block_map``; unknown keys raise."""
    out: StateDict = {}
    unknown = []
    for key, value in sd.items():
        m = block.fullmatch(key)
        if key in fixed:
            out[fixed[key]] = value
        elif m and m.group(2) in block_map:
            out[block_fmt.format(m.group(1), block_map[m.group(2)])] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"{what}: unexpected keys {unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
    return out


# Wan2.1 wan/modules/t5.py (T5Encoder, shared_pos=False) <-> transformers UMT5EncoderModel.
_T5_FIXED = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
_T5_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # gate = GELU(tanh) branch
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # linear branch
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def t5_original_to_hf(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """``models_t5_umt5-xxl-enc-bf16.pth`` keys -> ``UMT5EncoderModel`` keys (embedding written tied)."""
    out = _remap(sd, _T5_FIXED, re.compile(r"blocks\.(\d+)\.(.+)"), "encoder.block.{}.{}", _T5_BLOCK, "umT5")
    out["encoder.embed_tokens.weight"] = out["shared.weight"]
    return out


def t5_hf_to_original(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """``UMT5EncoderModel`` keys -> Wan's umT5 encoder keys (the tied ``encoder.embed_tokens`` is dropped)."""
    sd = dict(sd)
    tied = sd.pop("encoder.embed_tokens.weight", None)
    if "shared.weight" not in sd and tied is not None:
        sd["shared.weight"] = tied
    inv = {v: k for k, v in _T5_BLOCK.items()}
    return _remap(sd, {v: k for k, v in _T5_FIXED.items()}, re.compile(r"encoder\.block\.(\d+)\.(.+)"),
                  "blocks.{}.{}", inv, "UMT5EncoderModel")


# Wan2.1 wan/modules/clip.py VisionTransformer (pool 'token', pre_norm, no patch bias) <-> CLIPVisionModel.
_CLIP_FIXED = {
    "visual.patch_embedding.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.pre_norm.weight": "vision_model.pre_layrnorm.weight",
    "visual.pre_norm.bias": "vision_model.pre_layrnorm.bias",
    "visual.post_norm.weight": "vision_model.post_layernorm.weight",
    "visual.post_norm.bias": "vision_model.post_layernorm.bias",
}
_CLIP_BLOCK = {
    f"{o}.{p}": f"{h}.{p}" for p in ("weight", "bias")
    for o, h in (("norm1", "layer_norm1"), ("attn.proj", "self_attn.out_proj"), ("norm2", "layer_norm2"),
                 ("mlp.0", "mlp.fc1"), ("mlp.2", "mlp.fc2"))
}


def clip_vision_original_to_hf(sd: Mapping[str, torch.Tensor], projection: bool = True) -> StateDict:
    """CLIP ``.pth`` vision tower -> ``CLIPVisionModelWithProjection`` keys (``projection=False``: CLIPVisionModel).

    The fused ``attn.to_qkv`` is split q, k, v (Wan views it as ``[3, heads, head_dim]``). The textual tower
    (``textual.*``) and ``log_scale`` are ignored on purpose: Wan I2V only uses the image features.
    """
    vis = {k: v for k, v in sd.items() if k.startswith("visual.")}
    special: StateDict = {}
    for key in [k for k in vis if re.fullmatch(r"visual\.transformer\.\d+\.attn\.to_qkv\.(weight|bias)", k)]:
        layer, kind = key.split(".")[2], key.rsplit(".", 1)[1]
        for name, part in zip("qkv", vis.pop(key).chunk(3, dim=0)):
            special[f"vision_model.encoder.layers.{layer}.self_attn.{name}_proj.{kind}"] = part.contiguous()
    if "visual.cls_embedding" in vis:
        special["vision_model.embeddings.class_embedding"] = vis.pop("visual.cls_embedding").reshape(-1)
    if "visual.pos_embedding" in vis:
        special["vision_model.embeddings.position_embedding.weight"] = vis.pop("visual.pos_embedding")[0]
    head = vis.pop("visual.head", None)
    if projection and head is not None:
        special["visual_projection.weight"] = head.t().contiguous()
    out = _remap(vis, _CLIP_FIXED, re.compile(r"visual\.transformer\.(\d+)\.(.+)"),
                 "vision_model.encoder.layers.{}.{}", _CLIP_BLOCK, "CLIP vision")
    return {**out, **special}


def clip_vision_hf_to_original(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """``CLIPVisionModel(WithProjection)`` keys -> the CLIP ``.pth``'s ``visual.*`` keys (q/k/v fused)."""
    sd = dict(sd)
    special: StateDict = {}
    layers = {m.group(1) for k in sd if (m := re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\..+", k))}
    for layer in sorted(layers, key=int):
        base = f"vision_model.encoder.layers.{layer}.self_attn."
        for kind in ("weight", "bias"):
            parts = [sd.pop(f"{base}{n}_proj.{kind}") for n in "qkv"]
            special[f"visual.transformer.{layer}.attn.to_qkv.{kind}"] = torch.cat(parts, dim=0)
    special["visual.cls_embedding"] = sd.pop("vision_model.embeddings.class_embedding").reshape(1, 1, -1)
    special["visual.pos_embedding"] = sd.pop("vision_model.embeddings.position_embedding.weight")[None]
    if "visual_projection.weight" in sd:
        special["visual.head"] = sd.pop("visual_projection.weight").t().contiguous()
    inv = {v: k for k, v in _CLIP_BLOCK.items()}
    out = _remap(sd, {v: k for k, v in _CLIP_FIXED.items()}, re.compile(r"vision_model\.encoder\.layers\.(\d+)\.(.+)"),
                 "visual.transformer.{}.{}", inv, "CLIPVisionModel")
    return {**special, **out}


# The inverses of diffusers' converters, for writing original-layout / ComfyUI files (fixtures, exports).
_TR_FIXED = {f"{d}.{p}": f"{o}.{p}" for p in ("weight", "bias") for d, o in (
    ("patch_embedding", "patch_embedding"),
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    ("proj_out", "head.head"))}
_TR_FIXED["scale_shift_table"] = "head.modulation"


def _transformer_block_map() -> dict[str, str]:
    """Per-block diffusers suffix -> original suffix."""
    out = {"scale_shift_table": "modulation", "attn2.norm_added_k.weight": "cross_attn.norm_k_img.weight"}
    for d, o in (("attn1", "self_attn"), ("attn2", "cross_attn")):
        out.update({f"{d}.norm_q.weight": f"{o}.norm_q.weight", f"{d}.norm_k.weight": f"{o}.norm_k.weight"})
        for p in ("weight", "bias"):
            for dp, op in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "o"),
                           ("add_k_proj", "k_img"), ("add_v_proj", "v_img")):
                out[f"{d}.{dp}.{p}"] = f"{o}.{op}.{p}"
    for p in ("weight", "bias"):
        # diffusers' norm2 is the affine cross-attention norm, which the original calls norm3.
        out.update({f"norm2.{p}": f"norm3.{p}", f"ffn.net.0.proj.{p}": f"ffn.0.{p}", f"ffn.net.2.{p}": f"ffn.2.{p}"})
    return out


_TR_BLOCK = _transformer_block_map()


def wan_transformer_diffusers_to_original(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """``WanTransformer3DModel`` keys -> original WanModel keys (inverse of diffusers' converter; I2V/T2V)."""
    return _remap(sd, _TR_FIXED, re.compile(r"blocks\.(\d+)\.(.+)"), "blocks.{}.{}", _TR_BLOCK,
                  "WanTransformer3DModel")


_VAE_RES = {"norm1.gamma": "residual.0.gamma", "conv1.weight": "residual.2.weight", "conv1.bias": "residual.2.bias",
            "norm2.gamma": "residual.3.gamma", "conv2.weight": "residual.6.weight", "conv2.bias": "residual.6.bias",
            "conv_shortcut.weight": "shortcut.weight", "conv_shortcut.bias": "shortcut.bias"}


def wan_vae_diffusers_to_original(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """``AutoencoderKLWan`` keys -> ``Wan2.1_VAE.pth`` keys (inverse of diffusers' converter)."""
    resnets = {m.group(1) for k in sd if (m := re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)\.", k))}
    stride = len(resnets) + 1  # resnets then one upsampler per decoder stage, flattened in the original
    fixed = {"quant_conv.weight": "conv1.weight", "quant_conv.bias": "conv1.bias",
             "post_quant_conv.weight": "conv2.weight", "post_quant_conv.bias": "conv2.bias"}
    for side in ("encoder", "decoder"):
        for d, o in (("conv_in", "conv1"), ("conv_out", "head.2")):
            fixed.update({f"{side}.{d}.weight": f"{side}.{o}.weight", f"{side}.{d}.bias": f"{side}.{o}.bias"})
        fixed[f"{side}.norm_out.gamma"] = f"{side}.head.0.gamma"
    out: StateDict = {}
    unknown = []
    for key, value in sd.items():
        if key in fixed:
            out[fixed[key]] = value
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)", key):
            out[f"{m.group(1)}.middle.{2 * int(m.group(2))}.{_VAE_RES[m.group(3)]}"] = value
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            out[f"{m.group(1)}.middle.1.{m.group(2)}"] = value
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", key):
            out[f"encoder.downsamples.{m.group(1)}.{_VAE_RES.get(m.group(2), m.group(2))}"] = value
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"decoder.upsamples.{int(m.group(1)) * stride + int(m.group(2))}.{_VAE_RES[m.group(3)]}"] = value
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            out[f"decoder.upsamples.{int(m.group(1)) * stride + stride - 1}.{m.group(2)}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"AutoencoderKLWan: unexpected keys {unknown[:10]}")
    return out
