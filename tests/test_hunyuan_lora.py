"""HunyuanVideo LoRA files: the comfyui layout (original names, fused q/k/v and linear1) keeps every update exactly,
names only modules ComfyUI maps, and loads in diffusers' pipeline with every key used and the same output."""

from __future__ import annotations

import logging

import pytest
import torch
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import load_file

from models.hunyuan_video import layouts as hl
from models.hunyuan_video.lora_formats import load_lora, save_lora
from models.wan.lora_formats import LoraFormatError


@pytest.fixture(scope="module")
def adapter(tiny_hunyuan_diffusers):
    from models.hunyuan_video.adapter import HunyuanVideoAdapter

    return HunyuanVideoAdapter(tiny_hunyuan_diffusers, dtype=torch.float32)


def random_lora(adapter, targets: list[str], seed: int = 0) -> dict[str, torch.Tensor]:
    from diffusers import HunyuanVideoTransformer3DModel

    model = HunyuanVideoTransformer3DModel.from_config(adapter.transformer_config())
    torch.manual_seed(seed)
    model.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    return get_peft_model_state_dict(model)


def updates(peft_sd: dict, scale: dict | float) -> dict[str, torch.Tensor]:
    out = {}
    for k, a in peft_sd.items():
        if k.endswith("lora_A.weight"):
            m = k.removesuffix(".lora_A.weight")
            s = scale[m] / a.shape[0] if isinstance(scale, dict) else scale
            out[m] = peft_sd[f"{m}.lora_B.weight"].double() @ a.double() * s
    return out


def test_comfyui_layout_round_trips_every_update(adapter, tmp_path):
    sd = random_lora(adapter, adapter.lora_target_modules())
    path = save_lora(tmp_path / "l.safetensors", sd, rank=4, alpha=8.0, base_model=adapter.base_model_name(),
                     trigger="p3rs0n,", dtype=torch.float32)
    keys = list(load_file(path))
    assert not any(k.endswith(".alpha") for k in keys)  # diffusers' Hunyuan loader rejects non-"lora" keys
    # every module is one ComfyUI maps: `diffusion_model.` + a linear of the original model
    original = hl.transformer_diffusers_to_original(adapter.load_transformer().state_dict())
    modules = {k.rsplit(".lora_", 1)[0].removeprefix("diffusion_model.") for k in keys}
    assert all(f"{m}.weight" in original for m in modules)
    assert {"double_blocks.0.img_attn_qkv", "double_blocks.0.txt_attn_qkv", "single_blocks.0.linear1",
            "single_blocks.1.linear2"} <= modules
    peft, alphas, meta = load_lora(path)
    assert meta["base_model"] == "hunyuanvideo-i2v-33ch-custom-32" and meta["rank"] == "4"
    assert set(peft) == set(sd)
    assert all(peft[k].shape == sd[k].shape for k in sd)  # unfused back to rank 4 each
    want, got = updates(sd, 2.0), updates(peft, alphas)
    for m in want:
        torch.testing.assert_close(got[m], want[m], rtol=0, atol=1e-6)


def test_diffusers_loads_the_comfyui_layout_with_every_key_and_same_output(adapter, tmp_path,
                                                                           tiny_hunyuan_diffusers):
    from diffusers import HunyuanVideoImageToVideoPipeline

    from models.lora import load_lora_weights_into
    from tests.test_hunyuan_layouts import model_inputs

    # Double-stream blocks only: diffusers' converter splits the single blocks' linear1 at the real width 3072.
    targets = [t for t in adapter.lora_target_modules() if t.startswith("transformer_blocks.")]
    sd = random_lora(adapter, targets, seed=1)
    path = save_lora(tmp_path / "d.safetensors", sd, rank=4, alpha=8.0, base_model=adapter.base_model_name(),
                     trigger="", dtype=torch.float32)
    pipe = HunyuanVideoImageToVideoPipeline.from_pretrained(tiny_hunyuan_diffusers, dtype=torch.float32)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("diffusers").addHandler(handler)
    try:
        pipe.load_lora_weights(str(path))
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert not [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    loaded = {n.rsplit(".lora_A", 1)[0] for n, _ in pipe.transformer.named_parameters() if ".lora_A." in n}
    assert loaded == set(targets)  # every fused key became its parts, nothing else
    ours = adapter.load_transformer()
    load_lora_weights_into(ours, path, adapter_name="file")
    x, t, c = model_inputs()
    ref = pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=c.text,
                           encoder_attention_mask=c.text_mask, pooled_projections=c.pooled, return_dict=False)[0]
    got = adapter.predict(x, t, c)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    ours.delete_adapters("file")
    assert (adapter.predict(x, t, c) - ref).abs().max() > 1e-3  # the LoRA did change the output


def test_other_layouts_and_families_are_told_apart(adapter, tmp_path):
    sd = random_lora(adapter, adapter.lora_target_modules()[:4])
    path = save_lora(tmp_path / "d.safetensors", sd, fmt="diffusers", rank=4, alpha=4.0, base_model="x-hunyuan",
                     trigger="", dtype=torch.float32)
    assert all(k.startswith("transformer.transformer_blocks.0.") for k in load_file(path))
    peft, _, _ = load_lora(path)
    assert set(peft) == set(sd)
    from safetensors.torch import save_file

    wan = tmp_path / "wan.safetensors"
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 8),
               "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(8, 4)}, str(wan))
    with pytest.raises(LoraFormatError, match="not a HunyuanVideo"):
        load_lora(wan)


def test_musubi_layout_reads_as_the_same_updates(adapter, tmp_path):
    """kohya/musubi-tuner files (`lora_unet_` + underscored original names, lora_down/lora_up, `.alpha`) load with
    every update equal to the comfyui file they were renamed from."""
    from safetensors.torch import save_file

    sd = random_lora(adapter, adapter.lora_target_modules())
    path = save_lora(tmp_path / "c.safetensors", sd, rank=4, alpha=8.0, base_model=adapter.base_model_name(),
                     trigger="", dtype=torch.float32)
    musubi = {}
    for key, value in load_file(path).items():
        module, part = key.removeprefix("diffusion_model.").rsplit(".lora_", 1)
        name = "lora_unet_" + module.replace(".", "_")
        musubi[f"{name}.lora_{'down' if part.startswith('A') else 'up'}.weight"] = value
        if part.startswith("A"):
            musubi[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))  # scale 1: alpha was folded into B
    save_file(musubi, tmp_path / "m.safetensors")
    assert any(k.startswith("lora_unet_double_blocks_0_img_mlp_fc1") for k in musubi)
    peft_c, alphas_c, _ = load_lora(path)
    peft_m, alphas_m, _ = load_lora(tmp_path / "m.safetensors")
    assert set(peft_m) == set(peft_c)
    want, got = updates(peft_c, alphas_c), updates(peft_m, alphas_m)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7)
