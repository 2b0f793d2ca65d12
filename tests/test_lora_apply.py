"""models/lora.py on the adapter's transformer: what it saves loads in diffusers' pipeline with the same
effect, other trainers' files load into it, training starts from an existing LoRA, LoRAs stack."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models.base import Conditioning
from models.lora import add_lora, load_lora_weights_into, lora_state_dict, save_trained_lora
from models.wan.adapter import WanAdapter
from models.wan.lora_formats import LoraBaseModelError, LoraFormatError

# Original-Wan names written out by hand from Wan's model.py (as tests/test_lora_formats.py does).
ORIGINAL = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
            "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
            "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0",
            "ffn.net.2": "ffn.2", "attn2.add_k_proj": "cross_attn.k_img", "attn2.add_v_proj": "cross_attn.v_img"}
RANK = 4


def inputs() -> tuple[torch.Tensor, torch.Tensor, Conditioning]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(1, 36, 2, 4, 4, generator=g), torch.tensor([600.0]),
            Conditioning(None, torch.randn(1, 512, 24, generator=g), torch.randn(1, 5, 160, generator=g)))


def fresh(path) -> WanAdapter:
    return WanAdapter(path, dtype=torch.float32)


def trained(path, alpha: float = 8.0, image_kv: bool = False, seed: int = 3) -> WanAdapter:
    """An adapter with a random, non-zero LoRA (as if trained), rounded to bf16 as files store it."""
    a = fresh(path)
    add_lora(a.load_transformer(), a.lora_target_modules(image_kv), RANK, alpha)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in a.load_transformer().named_parameters():
            if "lora_" in name:
                p.copy_((torch.randn(p.shape, generator=g) * 0.2).bfloat16().float())
    return a


def predict(a: WanAdapter) -> torch.Tensor:
    with torch.no_grad():
        return a.predict(*inputs())


def original_key(module: str) -> str:
    block, rest = module.split(".", 2)[1:]
    return f"blocks.{block}.{ORIGINAL[rest]}"


@pytest.fixture(scope="module")
def lora_adapter(tiny_wan_diffusers) -> WanAdapter:
    return trained(tiny_wan_diffusers)


@pytest.mark.parametrize("fmt", ["comfyui", "diffusers"])
def test_saved_lora_loads_in_the_pipeline_with_every_key_and_same_output(fmt, lora_adapter, tiny_wan_diffusers,
                                                                         tmp_path):
    from diffusers import WanImageToVideoPipeline

    path = save_trained_lora(tmp_path / "l.safetensors", lora_adapter.load_transformer(), fmt, rank=RANK, alpha=8.0,
                             trigger="p3rs0n,", config_toml="[adapter]\nrank = 4\n")
    with safe_open(str(path), framework="pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["base_model"] == "wan2.1-i2v-custom-32" and meta["rank"] == "4" and meta["trigger"] == "p3rs0n,"
    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan_diffusers)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("diffusers").addHandler(handler)
    try:
        pipe.load_lora_weights(str(path))
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert not [r.getMessage() for r in records]
    # Every key consumed: each module of the file has its pair in the pipeline's transformer, with its values.
    assert len({k.rsplit(".lora_", 1)[0] for k in keys if ".lora_" in k}) == 2 * 10  # 2 blocks x 10 linears
    theirs_sd = {n.replace(".default_0.", "."): p for n, p in pipe.transformer.named_parameters() if ".lora_" in n}
    ours_sd = lora_state_dict(lora_adapter.load_transformer())
    layers = dict(pipe.transformer.named_modules())
    for key in [k for k in ours_sd if k.endswith("lora_A.weight")]:
        m = key.rsplit(".lora_A", 1)[0]  # diffusers may fold alpha into A or B: compare the updates
        delta = layers[m].scaling["default_0"] * theirs_sd[f"{m}.lora_B.weight"] @ theirs_sd[key]
        torch.testing.assert_close(delta, 8.0 / RANK * ours_sd[f"{m}.lora_B.weight"] @ ours_sd[key], msg=m)
    # diffusers adds zero LoRAs on the image k/v projections (so T2V LoRAs load into I2V); nothing else.
    extra = {k for k in theirs_sd if k not in ours_sd}
    assert all("add_k_proj" in k or "add_v_proj" in k for k in extra)
    assert all(not theirs_sd[k].any() for k in extra if "lora_B" in k)
    x, t, c = inputs()
    with torch.no_grad():
        theirs = pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=c.text,
                                  encoder_hidden_states_image=c.image, return_dict=False)[0]
    ours = predict(lora_adapter)
    assert (ours - predict(fresh(tiny_wan_diffusers))).abs().max() > 1e-2  # the LoRA has an effect
    # The file stores bf16 and the diffusers layout folds alpha/rank into lora_B (one more bf16 rounding).
    tol = 0.0 if fmt == "comfyui" else 1e-2 * ours.abs().max().item()
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=tol + 1e-5)
    # And our loader reads the file back to the same model.
    back = fresh(tiny_wan_diffusers)
    report = load_lora_weights_into(back.load_transformer(), path)
    assert report.modules == 20 and report.unmatched == []
    torch.testing.assert_close(predict(back), theirs, rtol=1e-5, atol=1e-5)


def _other_layouts(peft: dict[str, torch.Tensor], alpha: float) -> dict[str, dict[str, torch.Tensor]]:
    """The same LoRA as other trainers write it (key patterns from their docs and code)."""
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in peft})
    out: dict[str, dict[str, torch.Tensor]] = {"musubi": {}, "comfyui_down_up": {}, "diffusers": {}}
    for m in modules:
        a, b = peft[f"{m}.lora_A.weight"], peft[f"{m}.lora_B.weight"]
        mus = "lora_unet_" + original_key(m).replace(".", "_")
        out["musubi"].update({f"{mus}.lora_down.weight": a, f"{mus}.lora_up.weight": b,
                              f"{mus}.alpha": torch.tensor(alpha)})
        com = f"diffusion_model.{original_key(m)}"
        out["comfyui_down_up"].update({f"{com}.lora_down.weight": a, f"{com}.lora_up.weight": b,
                                       f"{com}.alpha": torch.tensor(alpha)})
        out["diffusers"].update({f"transformer.{m}.lora_A.weight": a,
                                 f"transformer.{m}.lora_B.weight": b * (alpha / RANK)})
    return out


def test_other_trainers_layouts_load_into_the_adapter(tiny_wan_diffusers, tmp_path):
    ref = trained(tiny_wan_diffusers, alpha=2.0, image_kv=True)
    want = predict(ref)
    for name, sd in _other_layouts(lora_state_dict(ref.load_transformer()), 2.0).items():
        save_file(sd, str(tmp_path / f"{name}.safetensors"))
        a = fresh(tiny_wan_diffusers)
        report = load_lora_weights_into(a.load_transformer(), tmp_path / f"{name}.safetensors")
        assert report.modules == 24 and report.unmatched == [], name
        assert not [p for p in a.load_transformer().parameters() if p.requires_grad]  # inference: frozen
        torch.testing.assert_close(predict(a), want, rtol=1e-5, atol=1e-5, msg=name)


def test_training_starts_from_an_existing_lora(lora_adapter, tiny_wan_diffusers, tmp_path):
    path = save_trained_lora(tmp_path / "init.safetensors", lora_adapter.load_transformer(), rank=RANK, alpha=8.0)
    a = fresh(tiny_wan_diffusers)
    params = add_lora(a.load_transformer(), a.lora_target_modules(), RANK, 4.0)  # another alpha than the file's
    report = load_lora_weights_into(a.load_transformer(), path)
    assert report.modules == 20 and report.adapter_name == "default"
    assert all(p.requires_grad for p in params)
    torch.testing.assert_close(predict(a), predict(lora_adapter), rtol=1e-5, atol=1e-5)  # alpha converted

    wider = trained(tiny_wan_diffusers, image_kv=True)  # also the image k/v the run does not train
    path = save_trained_lora(tmp_path / "wide.safetensors", wider.load_transformer(), rank=RANK, alpha=8.0)
    b = fresh(tiny_wan_diffusers)
    add_lora(b.load_transformer(), b.lora_target_modules(), RANK, 4.0)
    with pytest.warns(UserWarning, match="8 LoRA keys match no module of adapter 'default'"):
        report = load_lora_weights_into(b.load_transformer(), path)
    assert sorted(report.unmatched)[:2] == ["blocks.0.attn2.add_k_proj.lora_A.weight",
                                            "blocks.0.attn2.add_k_proj.lora_B.weight"]

    c = fresh(tiny_wan_diffusers)
    add_lora(c.load_transformer(), c.lora_target_modules(), 8, 8.0)
    with pytest.raises(LoraFormatError,
                       match=r"lora_A.weight has shape 4x\d+, this adapter.s 8x\d+ \(the file.s rank 4, "
                             r"adapter.rank 8\)"):
        load_lora_weights_into(c.load_transformer(), tmp_path / "init.safetensors")


def test_loras_stack_with_weights(tiny_wan_diffusers, tmp_path):
    one, two = trained(tiny_wan_diffusers, alpha=4.0, seed=5), trained(tiny_wan_diffusers, alpha=2.0, seed=6)
    files = [save_trained_lora(tmp_path / f"{i}.safetensors", m.load_transformer(), rank=RANK, alpha=al)
             for i, (m, al) in enumerate([(one, 4.0), (two, 2.0)])]
    a = fresh(tiny_wan_diffusers)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_lora_weights_into(a.load_transformer(), files[0], weight=0.5, adapter_name="one")
        load_lora_weights_into(a.load_transformer(), files[1], weight=1.5, adapter_name="two")
    # Reference: the updates merged by hand into the plain weights, W + sum_i w_i (alpha_i / r) B_i A_i.
    ref = fresh(tiny_wan_diffusers)
    modules = dict(ref.load_transformer().named_modules())
    with torch.no_grad():
        for model, alpha, weight in ((one, 4.0, 0.5), (two, 2.0, 1.5)):
            sd = lora_state_dict(model.load_transformer())
            for key in [k for k in sd if k.endswith("lora_A.weight")]:
                m = key.rsplit(".lora_A", 1)[0]
                modules[m].weight += weight * alpha / RANK * sd[f"{m}.lora_B.weight"] @ sd[key]
    torch.testing.assert_close(predict(a), predict(ref), rtol=1e-5, atol=1e-5)


def test_lora_for_another_model_size_is_refused(tiny_wan_diffusers, tmp_path):
    big = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(RANK, 5120),
           "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(5120, RANK)}
    save_file(big, str(tmp_path / "big.safetensors"))
    with pytest.raises(LoraBaseModelError, match="Wan 14B LoRA"):
        load_lora_weights_into(fresh(tiny_wan_diffusers).load_transformer(), tmp_path / "big.safetensors")
