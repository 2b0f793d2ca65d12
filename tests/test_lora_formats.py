"""LoRA key layouts: files we write load in diffusers (and under ComfyUI's patch rule) with the adapter's effect,
other trainers' layouts read back to the same PEFT dict, and wrong files fail with a clear error."""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager

import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from peft import LoraConfig, get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file

from config.errors import UserError
from models.wan import lora_formats as lf

BLOCK_TARGETS = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
                 "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"]
WIDE_TARGETS = BLOCK_TARGETS + ["attn2.add_k_proj", "attn2.add_v_proj", "condition_embedder.time_proj", "proj_out",
                                "text_embedder.linear_1", "time_embedder.linear_2", "image_embedder.ff.net.0.proj"]
# Original-Wan names written out by hand from Wan's model.py, independent of the module under test.
ORIGINAL = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
            "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
            "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0",
            "ffn.net.2": "ffn.2"}
RANK = 4


def tiny_wan(head_dim: int = 12, image: bool = True) -> WanTransformer3DModel:
    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=head_dim, in_channels=36, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2, image_dim=32 if image else None,
        added_kv_proj_dim=2 * head_dim if image else None, rope_max_seq_len=32).eval()


@pytest.fixture(scope="module")
def base() -> WanTransformer3DModel:
    return tiny_wan()


@pytest.fixture(scope="module")
def inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    # Text context must be 512 tokens: Wan's processor splits image tokens off by that length.
    return dict(hidden_states=torch.randn(1, 36, 2, 4, 4, generator=g), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 512, 32, generator=g),
                encoder_hidden_states_image=torch.randn(1, 4, 32, generator=g), return_dict=False)


def trained(base, inputs, targets, alpha):
    """(peft_sd, output) of `base` with a random non-zero LoRA: the reference every loader must reproduce."""
    model = copy.deepcopy(base)
    model.add_adapter(LoraConfig(r=RANK, lora_alpha=alpha, target_modules=targets))
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.1)
        out = model(**inputs)[0]
        assert (out - base(**inputs)[0]).abs().max() > 1e-2  # the LoRA has an effect
    return get_peft_model_state_dict(model), out


@contextmanager
def diffusers_warnings():
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def load_with_diffusers(base, lora, inputs):
    """Load a file or dict with WanImageToVideoPipeline.load_lora_weights -> (model, output, warnings)."""
    model = copy.deepcopy(base)
    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=model)
    with diffusers_warnings() as records:
        pipe.load_lora_weights(lora if isinstance(lora, dict) else str(lora))
    with torch.no_grad():
        out = model(**inputs)[0]
    return model, out, [r.getMessage() for r in records]


def loaded_modules(model, expected: set[str]) -> set[str]:
    """LoRA modules in `model`; the zero image-k/v ones diffusers adds to a T2V-style LoRA are checked and left out."""
    found = {}
    for name, p in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            found.setdefault(name.split(".lora_")[0], []).append(p)
    for module, params in list(found.items()):
        if module not in expected and module.endswith(("add_k_proj", "add_v_proj")):
            assert all(p.abs().sum() == 0 for p in params), module
            del found[module]
    assert all(len(params) == 2 for params in found.values())
    return set(found)


def peft_modules(peft_sd) -> set[str]:
    return {k.rsplit(".lora_", 1)[0] for k in peft_sd}


def test_name_map_covers_every_lora_able_module(base):
    names = [n for n, m in base.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d))]
    for name in names:
        original = lf._diffusers_to_original(name)
        assert original and lf._original_to_diffusers(original) == name, name
    assert lf._diffusers_to_original("blocks.1.attn2.add_k_proj") == "blocks.1.cross_attn.k_img"
    assert lf._diffusers_to_original("proj_out") == "head.head"


@pytest.mark.parametrize("fmt", ["comfyui", "diffusers"])
@pytest.mark.parametrize("targets,alpha", [(BLOCK_TARGETS, RANK), (WIDE_TARGETS, 6.0)], ids=["blocks", "wide"])
def test_saved_file_loads_in_diffusers_like_the_adapter(base, inputs, tmp_path, fmt, targets, alpha):
    if fmt == "diffusers" and targets is WIDE_TARGETS:
        targets = targets + ["patch_embedding"]  # diffusers' comfyui-layout converter has no patch_embedding
    peft_sd, ref = trained(base, inputs, targets, alpha)
    path = lf.save_lora(tmp_path / "l.safetensors", peft_sd, fmt=fmt, rank=RANK, alpha=alpha,
                        base_model="wan2.1-i2v-14b-480p", trigger="p3rs0n,", dtype=torch.float32)
    model, out, warnings = load_with_diffusers(base, path, inputs)
    assert warnings == []
    with safe_open(str(path), "pt") as f:
        n_file = sum(".alpha" not in k for k in f.keys())
    assert loaded_modules(model, peft_modules(peft_sd)) == peft_modules(peft_sd)
    assert 2 * len(peft_modules(peft_sd)) == n_file == len(peft_sd)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_comfyui_file_under_comfyui_patch_rule(base, inputs, tmp_path):
    """ComfyUI merges weight += (alpha / down.shape[0], or 1 without .alpha) * up @ down per
    `diffusion_model.<original name>` (comfy/weight_adapter/lora.py). Emulate that on the original names."""
    peft_sd, ref = trained(base, inputs, WIDE_TARGETS + ["patch_embedding"], 6.0)
    path = lf.save_lora(tmp_path / "c.safetensors", peft_sd, rank=RANK, alpha=6.0, base_model="wan", trigger="",
                        dtype=torch.float32)
    with safe_open(str(path), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    model = copy.deepcopy(base)
    params = dict(model.named_parameters())
    modules = {k.removesuffix(".lora_A.weight") for k in sd if k.endswith(".lora_A.weight")}
    for x in modules:
        down, up = sd[f"{x}.lora_A.weight"], sd[f"{x}.lora_B.weight"]
        scale = sd[f"{x}.alpha"].item() / down.shape[0] if f"{x}.alpha" in sd else 1.0
        (target,) = convert_wan_transformer_to_diffusers({x.removeprefix("diffusion_model.") + ".weight": None})
        with torch.no_grad():
            params[target] += scale * (up.flatten(1) @ down.flatten(1)).reshape(params[target].shape)
    assert any(k.endswith(".alpha") for k in sd) and "diffusion_model.head.head.alpha" not in sd
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs)[0], ref, atol=1e-5, rtol=0)


def test_round_trip_and_metadata(base, inputs, tmp_path):
    peft_sd, _ = trained(base, inputs, BLOCK_TARGETS, 8.0)
    toml = 'model = "wan"\n[adapter]\nrank = 4\n'
    path = lf.save_lora(tmp_path / "r.safetensors", peft_sd, rank=RANK, alpha=8.0, base_model="wan2.1-i2v-14b-480p",
                        trigger="p3rs0n,", config_toml=toml, extra={"steps": 100})
    back, alphas, meta = lf.load_lora(path, expected_base_model="wan2.1-i2v-14b-720p")
    assert back.keys() == peft_sd.keys()
    for k, v in peft_sd.items():
        assert back[k].dtype == torch.bfloat16 and torch.equal(back[k], v.to(torch.bfloat16)), k
    assert alphas == dict.fromkeys(peft_modules(peft_sd), 8.0)
    assert meta == {"format": "comfyui", "rank": "4", "alpha": "8.0", "base_model": "wan2.1-i2v-14b-480p",
                    "trigger": "p3rs0n,", "config": toml, "software": "lora-edit", "steps": "100"}
    with safe_open(str(path), "pt") as f:
        assert f.get_tensor("diffusion_model.blocks.0.self_attn.q.alpha").dtype == torch.float32
    # Rescaled for a PEFT LoRA with lora_alpha = rank: same effect, B carries alpha / rank.
    scaled, alphas = lf.to_peft(lf.to_comfyui(peft_sd, 8.0), network_alpha_target=RANK)
    assert set(alphas.values()) == {RANK}
    key = "blocks.1.ffn.net.2.lora_B.weight"
    torch.testing.assert_close(scaled[key], peft_sd[key] * 2)
    assert [p.name for p in tmp_path.iterdir()] == ["r.safetensors"]  # no temp file left behind
    with pytest.raises(ValueError, match="trigger"):
        lf.save_lora(tmp_path / "x.safetensors", peft_sd, rank=RANK, alpha=8.0, base_model="wan", trigger="",
                     extra={"trigger": "x"})
    assert not (tmp_path / "x.safetensors").exists()


def other_trainer_files(peft_sd, alpha):
    """The same LoRA as other trainers write it, from their documented key patterns. Tensors are cloned:
    diffusers' Wan converters scale some of a dict's tensors in place when it carries `.alpha`."""
    files = {"comfyui": {}, "musubi": {}, "diffusers": {}, "peft": {}}
    for key, t in peft_sd.items():
        module, half = key.rsplit(".lora_", 1)
        block, name = module.split(".", 2)[1], module.split(".", 2)[2]
        original = f"blocks.{block}.{ORIGINAL[name]}"
        kohya = "lora_down" if half.startswith("A") else "lora_up"
        folded = t * (alpha / RANK) if half.startswith("B") else t  # layouts without alpha carry it in B
        files["comfyui"][f"diffusion_model.{original}.{kohya}.weight"] = t
        files["comfyui"][f"diffusion_model.{original}.alpha"] = torch.tensor(alpha)
        files["musubi"][f"lora_unet_{original.replace('.', '_')}.{kohya}.weight"] = t
        files["musubi"][f"lora_unet_{original.replace('.', '_')}.alpha"] = torch.tensor(alpha)
        files["diffusers"][f"transformer.{key}"] = folded
        files["peft"][key] = folded
    return {fmt: {k: v.clone() for k, v in sd.items()} for fmt, sd in files.items()}


def test_other_trainers_layouts_read_to_the_same_peft_dict(base, inputs):
    peft_sd, ref = trained(base, inputs, BLOCK_TARGETS, 2.0)
    expected = {k: v * 0.5 if ".lora_B." in k else v for k, v in peft_sd.items()}
    for fmt, sd in other_trainer_files(peft_sd, 2.0).items():
        assert lf.detect_format(sd) == fmt
        got, alphas = lf.to_peft(sd, network_alpha_target=RANK)
        assert got.keys() == expected.keys(), fmt
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], atol=1e-7, rtol=0, msg=f"{fmt} {k}")
        # diffusers reads every layout but unprefixed peft (which it skips with a warning); ours must then load.
        loadable = sd if fmt != "peft" else lf.to_diffusers(got)
        _, out, warnings = load_with_diffusers(base, dict(loadable), inputs)
        assert warnings == [], fmt
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0, msg=fmt)


def test_warning_capture_sees_diffusers_skipping_unprefixed_keys(base, inputs):
    peft_sd, _ = trained(base, inputs, BLOCK_TARGETS, RANK)
    _, out, warnings = load_with_diffusers(base, dict(peft_sd), inputs)
    assert warnings  # so the empty-warnings assertions above can fail
    with torch.no_grad():
        torch.testing.assert_close(out, base(**inputs)[0])


def test_keys_that_match_nothing_are_listed(base, inputs, tmp_path):
    peft_sd, _ = trained(base, inputs, BLOCK_TARGETS, RANK)
    sd = lf.to_comfyui(peft_sd, RANK)
    sd["diffusion_model.blocks.0.norm3.lora_A.weight"] = torch.zeros(RANK, 24)
    sd["diffusion_model.blocks.1.self_attn.q.diff_b"] = torch.zeros(24)
    with pytest.raises(lf.LoraFormatError, match=r"2 keys.*norm3\.lora_A.*self_attn\.q\.diff_b"):
        lf.to_peft(sd)
    save_file(sd, tmp_path / "extra.safetensors")
    with pytest.raises(lf.LoraFormatError, match="extra.safetensors.*norm3"):
        lf.load_lora(tmp_path / "extra.safetensors")
    half = lf.to_comfyui(peft_sd, RANK)
    del half["diffusion_model.blocks.0.ffn.2.lora_B.weight"]
    with pytest.raises(lf.LoraFormatError, match=r"blocks\.0\.ffn\.net\.2\.lora_B\.weight \(missing\)"):
        lf.to_peft(half)


@pytest.mark.parametrize("keys,family", [
    (["transformer.double_blocks.0.img_attn_qkv.lora_A.weight", "transformer.txt_in.individual_token_refiner."
      "blocks.0.mlp.fc1.lora_A.weight"], "HunyuanVideo"),
    (["diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight"], "Flux"),
    (["transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight"], "Flux or HunyuanVideo"),
    (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "lora_te1_text_model.alpha"], "Stable Diff"),
    (["transformer.transformer_blocks.0.attn1.to_q.lora_A.weight"], "CogVideoX"),
])
def test_other_model_families_are_named(keys, family):
    with pytest.raises(lf.LoraBaseModelError, match=family):
        lf.detect_format(dict.fromkeys(keys, torch.zeros(1, 1)))


def test_unknown_layout_lists_sample_keys():
    with pytest.raises(lf.LoraFormatError, match="Unknown LoRA key layout.*some.weight") as info:
        lf.detect_format({"some.weight": torch.zeros(1)})
    assert not isinstance(info.value, lf.LoraBaseModelError)


def test_file_errors(tmp_path):
    with pytest.raises(lf.LoraFileNotFoundError, match="nope.safetensors"):
        lf.load_lora(tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 4)
    with pytest.raises(lf.LoraNotSafetensorsError, match="not a safetensors file"):
        lf.load_lora(tmp_path / "bad.safetensors")
    for cls in (lf.LoraFileNotFoundError, lf.LoraNotSafetensorsError, lf.LoraFormatError, lf.LoraBaseModelError):
        assert issubclass(cls, UserError)


def test_base_model_mismatch(tmp_path):
    sd = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(1, 1536),
          "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(1536, 1)}
    save_file(sd, tmp_path / "flux.safetensors", metadata={"base_model": "flux1-dev"})
    with pytest.raises(lf.LoraBaseModelError, match="flux1-dev"):
        lf.load_lora(tmp_path / "flux.safetensors")
    save_file(sd, tmp_path / "small.safetensors", metadata={"base_model": "wan2.1-t2v-1.3b"})
    with pytest.raises(lf.LoraBaseModelError, match="1.3b"):
        lf.load_lora(tmp_path / "small.safetensors", expected_base_model="wan2.1-i2v-14b-480p")
    save_file(sd, tmp_path / "bare.safetensors")  # no metadata: the 1536 hidden size gives the 1.3B away
    with pytest.raises(lf.LoraBaseModelError, match="1.3B"):
        lf.load_lora(tmp_path / "bare.safetensors", expected_base_model="wan2.1-i2v-14b-480p")
    assert lf.load_lora(tmp_path / "bare.safetensors", expected_base_model="wan2.1-t2v-1.3b")[0]


def test_unmatched_keys_against_a_model(base, inputs):
    peft_sd, _ = trained(base, inputs, BLOCK_TARGETS + ["attn2.add_k_proj"], RANK)
    assert lf.unmatched_keys(peft_sd, base) == []
    lf.check_fits(peft_sd, base)
    t2v = tiny_wan(image=False)
    assert lf.unmatched_keys(peft_sd, t2v) == [k for k in peft_sd if "add_k_proj" in k]
    wider = tiny_wan(head_dim=16)
    # Only the FFN's inner side (ffn_dim, the same in both) still fits.
    fits = {f"blocks.{i}.ffn.net.{k}" for i in (0, 1) for k in ("0.proj.lora_B.weight", "2.lora_A.weight")}
    assert set(lf.unmatched_keys(peft_sd, wider)) == set(peft_sd) - fits
    with pytest.raises(lf.LoraBaseModelError, match="hidden size is 24.*model's 32"):
        lf.check_fits(peft_sd, wider)
