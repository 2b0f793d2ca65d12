"""The tiny Wan fixtures: every layout builds, loads back, and maps 1:1 onto the same diffusers model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanTransformer3DModel
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, CLIPVisionModelWithProjection, UMT5EncoderModel

from models.wan import layouts as wl
from models.wan import tiny
from tools import make_tiny_model as cli

REPO = Path(__file__).resolve().parents[1]
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def assert_same_state(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want), (sorted(set(got) - set(want))[:5], sorted(set(want) - set(got))[:5])
    for key, value in want.items():
        assert got[key].shape == value.shape, key
        assert torch.equal(got[key].to(value.dtype), value), key


def text_embeds(tokenizer, encoder, text: str) -> torch.Tensor:
    # What the pipeline's _get_t5_prompt_embeds does, minus ftfy prompt cleaning (ftfy is not installed).
    ids = tokenizer([text], padding="max_length", max_length=wl.WAN_TEXT_LEN, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = encoder(ids.input_ids, ids.attention_mask).last_hidden_state
    out[:, int(ids.attention_mask.sum()):] = 0
    return out


# ----------------------------------------------------------------------------------------------- diffusers


def test_diffusers_layout_loads_and_generates(tiny_wan_diffusers: Path) -> None:
    assert wl.detect_layout(tiny_wan_diffusers) == "diffusers"
    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan_diffusers)
    tr, vae, te, ie = pipe.transformer, pipe.vae, pipe.text_encoder, pipe.image_encoder
    assert (tr.config.in_channels, tr.config.out_channels, vae.config.z_dim) == (36, 16, 16)
    assert tr.config.text_dim == te.config.d_model and tr.config.image_dim == ie.config.hidden_size
    assert tr.config.added_kv_proj_dim == tr.config.num_attention_heads * tr.config.attention_head_dim
    assert pipe.scheduler.config.prediction_type == "flow_prediction" and pipe.scheduler.config.flow_shift == 3.0
    assert len(list((tiny_wan_diffusers / "transformer").glob("diffusion_pytorch_model-*.safetensors"))) >= 2
    image = Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype("uint8"))
    out = pipe(image=image, prompt_embeds=text_embeds(pipe.tokenizer, te, "a red jacket"),
               negative_prompt_embeds=text_embeds(pipe.tokenizer, te, "blurry"), height=32, width=32,
               num_frames=5, num_inference_steps=2, guidance_scale=5.0, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 5, 32, 32, 3) and np.isfinite(out.frames).all()


# ----------------------------------------------------------------------------------------------- original


def test_original_layout_files(tiny_wan_original: Path) -> None:
    root = tiny_wan_original
    assert wl.detect_layout(root) == "original"
    config = json.loads((root / "config.json").read_text())
    assert set(config) == {"_class_name", "_diffusers_version", "dim", "eps", "ffn_dim", "freq_dim", "in_dim",
                           "model_type", "num_heads", "num_layers", "out_dim", "text_len"}
    assert (config["_class_name"], config["model_type"], config["text_len"]) == ("WanModel", "i2v", 512)
    index = json.loads((root / wl.ORIGINAL_INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and shards[0] == "diffusion_pytorch_model-00001-of-00002.safetensors"
    total, keys = 0, {}
    for shard in shards:
        with safe_open(str(root / shard), framework="pt") as f:
            for key in f.keys():
                keys[key] = shard
                total += f.get_tensor(key).nbytes
    assert keys == index["weight_map"] and total == index["metadata"]["total_size"]
    for name in (wl.ORIGINAL_VAE, wl.ORIGINAL_T5, wl.ORIGINAL_CLIP):
        sd = torch.load(root / name, weights_only=True, map_location="cpu")
        assert sd and all(isinstance(v, torch.Tensor) for v in sd.values())
    assert AutoTokenizer.from_pretrained(root / "xlm-roberta-large").pad_token_id == 1  # XLM-R's fairseq ids


def test_original_transformer_maps_onto_diffusers(tiny_wan_original: Path, tiny_wan_diffusers: Path) -> None:
    raw = load_file(str(tiny_wan_original / "diffusion_pytorch_model-00001-of-00002.safetensors"))
    assert {"patch_embedding.weight", "blocks.0.self_attn.q.weight", "blocks.0.cross_attn.k_img.weight",
            "blocks.0.cross_attn.norm_k_img.weight", "blocks.0.norm3.weight", "blocks.0.modulation",
            "img_emb.proj.0.weight", "time_projection.1.weight"} <= set(raw)
    ref = WanTransformer3DModel.from_pretrained(tiny_wan_diffusers / "transformer")
    converted = wl.load_original_transformer_state_dict(tiny_wan_original)  # diffusers' own converter
    assert_same_state(converted, ref.state_dict())
    config = wl.wan_transformer_config_from_original(tiny_wan_original / "config.json")
    assert config == {k: (list(v) if isinstance(v, tuple) else v) for k, v in ref.config.items() if k in config}
    model = WanTransformer3DModel(**config)
    model.load_state_dict(converted, strict=True)
    # Without shapes, the real widths are assumed (WanModel hard-codes them).
    bare = wl.wan_transformer_config_from_original(json.loads((tiny_wan_original / "config.json").read_text()))
    assert (bare["text_dim"], bare["image_dim"], bare["added_kv_proj_dim"]) == (4096, 1280, config["added_kv_proj_dim"])


def test_original_vae_maps_onto_diffusers(tiny_wan_original: Path, tiny_wan_diffusers: Path) -> None:
    raw = torch.load(tiny_wan_original / wl.ORIGINAL_VAE, weights_only=True, map_location="cpu")
    assert {"encoder.conv1.weight", "conv1.weight", "conv2.weight", "decoder.upsamples.3.time_conv.weight",
            "decoder.upsamples.4.shortcut.weight", "encoder.middle.1.to_qkv.weight"} <= set(raw)
    ref = AutoencoderKLWan.from_pretrained(tiny_wan_diffusers / "vae")
    converted = wl.load_original_vae_state_dict(tiny_wan_original / wl.ORIGINAL_VAE)
    assert_same_state(converted, ref.state_dict())
    config = wl.wan_vae_config_from_state_dict(converted)
    assert config == {k: ref.config[k] for k in config}
    AutoencoderKLWan(**config).load_state_dict(converted, strict=True)


# ----------------------------------------------------------------------------------------------- encoders


def test_t5_mapping_is_exact_and_outputs_match(tiny_wan_original: Path, tiny_wan_diffusers: Path) -> None:
    orig = torch.load(tiny_wan_original / wl.ORIGINAL_T5, weights_only=True, map_location="cpu")
    assert {"token_embedding.weight", "blocks.0.attn.q.weight", "blocks.0.pos_embedding.embedding.weight",
            "blocks.0.ffn.gate.0.weight", "blocks.0.ffn.fc1.weight", "norm.weight"} <= set(orig)
    assert all(v.dtype == torch.bfloat16 for v in orig.values())
    ref = UMT5EncoderModel.from_pretrained(tiny_wan_diffusers / "text_encoder").eval()
    assert_same_state(wl.t5_original_to_hf(orig), ref.state_dict())
    assert_same_state(wl.t5_hf_to_original(wl.t5_original_to_hf(orig)), orig)
    assert_same_state(wl.t5_original_to_hf(wl.t5_hf_to_original(ref.state_dict())), ref.state_dict())
    assert wl.t5_config_from_original(orig)["num_heads"] == ref.config.num_heads
    model = wl.load_original_t5(tiny_wan_original)
    tok_orig = AutoTokenizer.from_pretrained(tiny_wan_original / "google" / "umt5-xxl")
    tok_ref = AutoTokenizer.from_pretrained(tiny_wan_diffusers / "tokenizer")
    text = "a woman in a red jacket walks on the beach"
    assert tok_orig(text).input_ids == tok_ref(text).input_ids and tok_ref.unk_token_id not in tok_ref(text).input_ids
    torch.testing.assert_close(text_embeds(tok_orig, model, text), text_embeds(tok_ref, ref, text))


def wan_visual_penultimate(sd: dict, pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """Wan's VisionTransformer(use_31_block=True) from wan/modules/clip.py, restated: all blocks but the last."""
    w = {k[len("visual."):]: v.float() for k, v in sd.items() if k.startswith("visual.")}
    patch = w["patch_embedding.weight"].shape[-1]
    x = F.conv2d(pixels, w["patch_embedding.weight"], stride=patch).flatten(2).transpose(1, 2)  # no bias
    b, _, d = x.shape
    x = torch.cat([w["cls_embedding"].expand(b, -1, -1), x], dim=1) + w["pos_embedding"]
    x = F.layer_norm(x, (d,), w["pre_norm.weight"], w["pre_norm.bias"], 1e-5)
    layers = len({k.split(".")[1] for k in w if k.startswith("transformer.")})
    for i in range(layers - 1):
        p = f"transformer.{i}."
        h = F.layer_norm(x, (d,), w[p + "norm1.weight"], w[p + "norm1.bias"], 1e-5)
        q, k, v = F.linear(h, w[p + "attn.to_qkv.weight"], w[p + "attn.to_qkv.bias"]).view(b, -1, 3, heads,
                                                                                            d // heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + F.linear(a.transpose(1, 2).reshape(b, -1, d), w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        h = F.layer_norm(x, (d,), w[p + "norm2.weight"], w[p + "norm2.bias"], 1e-5)
        x = x + F.linear(F.gelu(F.linear(h, w[p + "mlp.0.weight"], w[p + "mlp.0.bias"])), w[p + "mlp.2.weight"],
                         w[p + "mlp.2.bias"])
    return x


def test_clip_mapping_is_exact_and_outputs_match(tiny_wan_original: Path, tiny_wan_diffusers: Path) -> None:
    orig = torch.load(tiny_wan_original / wl.ORIGINAL_CLIP, weights_only=True, map_location="cpu")
    assert {"log_scale", "visual.cls_embedding", "visual.pos_embedding", "visual.head", "visual.pre_norm.weight",
            "visual.post_norm.weight", "visual.transformer.0.attn.to_qkv.weight", "visual.transformer.0.mlp.2.bias",
            "textual.token_embedding.weight", "textual.blocks.0.attn.q.weight", "textual.head.2.weight"} <= set(orig)
    ref = CLIPVisionModelWithProjection.from_pretrained(tiny_wan_diffusers / "image_encoder").eval()
    hf = wl.clip_vision_original_to_hf(orig)  # textual tower and log_scale ignored on purpose
    assert_same_state(hf, ref.state_dict())
    visual = {k: v for k, v in orig.items() if k.startswith("visual.")}
    assert_same_state(wl.clip_vision_hf_to_original(hf), visual)
    assert_same_state(wl.clip_vision_original_to_hf(wl.clip_vision_hf_to_original(ref.state_dict())), ref.state_dict())
    assert "visual_projection.weight" not in wl.clip_vision_original_to_hf(orig, projection=False)
    assert wl.clip_vision_config_from_original(orig)["num_attention_heads"] == ref.config.num_attention_heads
    model = wl.load_original_clip_vision(tiny_wan_original)
    size = model.config.image_size
    processor = wl.original_clip_image_processor(size)
    image = Image.fromarray((np.random.RandomState(1).rand(40, 56, 3) * 255).astype("uint8"))
    pixels = processor(images=image, return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, size, size)
    with torch.no_grad():
        got = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        want = ref(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got, wan_visual_penultimate(orig, pixels, ref.config.num_attention_heads))


# ----------------------------------------------------------------------------------------------- single file


def test_single_file_variants_convert_to_the_same_keys(
    tiny_wan_single_file: Path, tiny_wan_single_file_fp8: Path, tiny_wan_diffusers: Path, tmp_path: Path
) -> None:
    ref = WanTransformer3DModel.from_pretrained(tiny_wan_diffusers / "transformer").state_dict()
    assert wl.detect_layout(tiny_wan_single_file) == wl.detect_layout(tiny_wan_single_file_fp8) == "single-file"
    assert all(k.startswith("model.diffusion_model.") for k in load_file(str(tiny_wan_single_file_fp8)))
    bf16 = wl.load_single_file_transformer_state_dict(tiny_wan_single_file)
    assert_same_state(bf16, {k: v.to(torch.bfloat16) for k, v in ref.items()})
    fp8 = wl.load_single_file_transformer_state_dict(tiny_wan_single_file_fp8)
    assert sorted(fp8) == sorted(ref) and fp8["blocks.0.attn1.to_q.weight"].dtype == torch.float8_e4m3fn
    assert fp8["blocks.0.attn1.to_q.bias"].dtype == torch.bfloat16  # 1-D tensors stay bf16 in the file
    up = wl.load_single_file_transformer_state_dict(tiny_wan_single_file_fp8, upcast_fp8=torch.bfloat16)
    assert not any(v.dtype in FP8 for v in up.values())
    assert torch.equal(up["blocks.0.ffn.net.0.proj.weight"],
                       ref["blocks.0.ffn.net.0.proj.weight"].to(torch.float8_e4m3fn).to(torch.bfloat16))
    # A bare "diffusion_model." prefix (some exporters) converts the same way.
    other = tmp_path / "other.safetensors"
    save_file({"diffusion_model." + k: v for k, v in load_file(str(tiny_wan_single_file)).items()}, str(other))
    assert_same_state(wl.load_single_file_transformer_state_dict(other), bf16)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in ref.items()}, str(other))  # diffusers keys
    assert wl.detect_layout(other) == "single-file"
    assert_same_state(wl.load_single_file_transformer_state_dict(other), bf16)


def test_scaled_fp8_single_file_is_dequantized(tiny_wan_single_file: Path, tmp_path: Path) -> None:
    sd = load_file(str(tiny_wan_single_file))
    w = sd["blocks.0.self_attn.q.weight"].float()
    scaled = {k: v.to(torch.float8_e4m3fn) if v.ndim >= 2 else v for k, v in sd.items()}
    scaled["blocks.0.self_attn.q.weight"] = (w / 4.0).to(torch.float8_e4m3fn)
    scaled["blocks.0.self_attn.q.scale_weight"] = torch.tensor([4.0])
    scaled["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    path = tmp_path / "scaled.safetensors"
    save_file(scaled, str(path))
    with pytest.raises(wl.WeightLayoutError, match="upcast_fp8"):
        wl.load_single_file_transformer_state_dict(path)
    out = wl.load_single_file_transformer_state_dict(path, upcast_fp8=torch.float32)
    assert not any("scale" in k for k in out if "scale_shift_table" not in k)
    torch.testing.assert_close(out["blocks.0.attn1.to_q.weight"], (w / 4.0).to(torch.float8_e4m3fn).float() * 4.0)


# ----------------------------------------------------------------------------------------------- tool + errors


def test_cli_help_teaches() -> None:
    done = subprocess.run([sys.executable, "-m", "tools.make_tiny_model", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for word in ("--layout", "--out", "--seed", "--dtype", "--prefix", "diffusers", "original", "single-file",
                 "Wan2.1_VAE.pth", "model.diffusion_model."):
        assert word in done.stdout


def test_cli_writes_a_loadable_folder_atomically(tmp_path: Path, tiny_wan_original: Path) -> None:
    out = tmp_path / "cli-original"
    assert cli.main(["--family", "wan-i2v", "--layout", "original", "--out", str(out), "--seed", "0"]) == 0
    assert wl.detect_layout(out) == "original"
    assert [p.name for p in tmp_path.iterdir()] == ["cli-original"]  # no temp folder left behind
    assert_same_state(wl.load_original_transformer_state_dict(out),
                      wl.load_original_transformer_state_dict(tiny_wan_original))  # same seed, same weights
    with pytest.raises(SystemExit):  # refuses to clobber
        cli.main(["--family", "wan-i2v", "--layout", "original", "--out", str(out)])
    with pytest.raises(SystemExit):
        cli.main(["--family", "wan-i2v", "--layout", "diffusers", "--out", str(tmp_path / "x"), "--dtype", "fp8"])
    tiny.build_tiny_wan(out, "single-file", seed=1, dtype="fp16", overwrite=True)
    assert [p.name for p in out.iterdir()] == [tiny.single_file_name("fp16")]
    seed1 = wl.load_single_file_transformer_state_dict(out / tiny.single_file_name("fp16"))
    seed0 = wl.load_original_transformer_state_dict(tiny_wan_original)
    assert not torch.equal(seed1["proj_out.weight"].float(), seed0["proj_out.weight"].half().float())


def test_detect_layout_names_what_is_missing(tmp_path: Path, tiny_wan_original: Path, tiny_wan_diffusers: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(wl.WeightLayoutError, match=r"(?s)not a recognised.*found: notes.txt.*model_index.json"):
        wl.detect_layout(tmp_path / "other")
    broken = tmp_path / "original"
    shutil.copytree(tiny_wan_original, broken)
    for name in (wl.ORIGINAL_VAE, wl.ORIGINAL_T5, "diffusion_pytorch_model-00002-of-00002.safetensors"):
        (broken / name).unlink()
    with pytest.raises(wl.WeightLayoutError) as err:
        wl.detect_layout(broken)
    message = str(err.value)
    assert "original" in message and "3 file(s) are missing" in message
    for name in (wl.ORIGINAL_VAE, wl.ORIGINAL_T5, "diffusion_pytorch_model-00002-of-00002.safetensors"):
        assert name in message
    with pytest.raises(wl.WeightLayoutError, match="missing"):
        wl.load_original_transformer_state_dict(broken)
    partial = tmp_path / "diffusers"
    shutil.copytree(tiny_wan_diffusers, partial, ignore=shutil.ignore_patterns("vae", "image_processor"))
    with pytest.raises(wl.WeightLayoutError) as err:
        wl.detect_layout(partial)
    assert "vae/config.json" in str(err.value) and "image_processor/preprocessor_config.json" in str(err.value)
    with pytest.raises(wl.WeightLayoutError, match="WanTransformer3DModel.*model_index.json"):
        wl.detect_layout(tiny_wan_diffusers / "transformer")
    with pytest.raises(wl.WeightLayoutError, match="not a Wan transformer"):
        wl.detect_layout(tiny_wan_original / "config.json")


# ----------------------------------------------------------------------------------------------- sizes

WIDER = {"transformer": {"num_layers": 3, "attention_head_dim": 24, "ffn_dim": 96},
         "t5": {"d_model": 32, "d_kv": 16}, "clip": {"hidden_size": 240, "num_attention_heads": 3}}


def test_sizes_override_one_build_and_keep_widths_consistent(tmp_path: Path) -> None:
    defaults = json.dumps(tiny.SIZE_DEFAULTS, sort_keys=True)
    out = tiny.build_tiny_wan(tmp_path / "wider", "diffusers", sizes=WIDER)
    assert json.dumps(tiny.SIZE_DEFAULTS, sort_keys=True) == defaults  # module constants untouched
    pipe = WanImageToVideoPipeline.from_pretrained(out)
    tr = pipe.transformer.config
    assert (tr.num_layers, tr.attention_head_dim, tr.ffn_dim) == (3, 24, 96)
    assert (tr.text_dim, tr.image_dim, tr.added_kv_proj_dim) == (32, 240, 2 * 24)
    assert pipe.text_encoder.config.d_model == 32 and pipe.image_encoder.config.hidden_size == 240
    image = Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype("uint8"))
    embeds = text_embeds(pipe.tokenizer, pipe.text_encoder, "a red jacket")
    frames = pipe(image=image, prompt_embeds=embeds, height=32, width=32, num_frames=5, num_inference_steps=1,
                  guidance_scale=1.0, output_type="np", generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 5, 32, 32, 3) and np.isfinite(frames).all()
    # The CLI takes the same overrides; the original layout reads the widths back off the shapes.
    orig = tmp_path / "wider-original"
    assert cli.main(["--family", "wan-i2v", "--layout", "original", "--out", str(orig),
                      "--sizes", json.dumps(WIDER)]) == 0
    config = wl.wan_transformer_config_from_original(orig / "config.json")
    assert config == {k: (list(v) if isinstance(v, tuple) else v) for k, v in tr.items() if k in config}


@pytest.mark.parametrize("sizes, message", [
    ({"transformer": {"num_layer": 3}}, "unknown key"),
    ({"unet": {}}, "unknown sizes section"),
    ({"vae": {"z_dim": 8}}, "fixed by the Wan2.1-I2V layout"),
    ({"t5": {"d_model": 32}, "transformer": {"text_dim": 24}}, "contradict"),
    ({"transformer": 3}, "must map section names"),
])
def test_bad_sizes_are_refused(sizes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny.resolve_sizes(sizes)
