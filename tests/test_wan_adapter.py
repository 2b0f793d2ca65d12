"""The Wan2.1-I2V adapter on tiny fixtures: layouts, conditioning equal to diffusers' pipeline, layers,
memory options, the encode cache, config dtypes, weight errors and quiet loading."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from config.errors import UserError
from config.schema import ModelConfig
from datasets.samples import video_sample
from engine.encode.cache import EncodeCache
from engine.encode.samples import encode_samples
from models.base import Conditioning, checkpoint_layers
from models.dtypes import dtype_from_name
from models.lora import add_lora
from models.registry import make_adapter
from models.wan.adapter import WanAdapter, base_model_name
from models.wan.loading import WeightsError

T, H, W = 5, 32, 32  # 4k+1 frames; latent 2 x 4 x 4


def frames(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def inputs(seed: int = 1, text_dim: int = 24, image_dim: int = 160) -> tuple[torch.Tensor, torch.Tensor, Conditioning]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 36, 2, 4, 4, generator=g)
    c = Conditioning(None, torch.randn(1, 512, text_dim, generator=g), torch.randn(1, 5, image_dim, generator=g))
    return x, torch.tensor([700.0]), c


def randomize_lora(transformer: torch.nn.Module, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def run_layers(layers: list, first: tuple) -> torch.Tensor:
    x = first
    for layer in layers:
        x = layer(x)
    return x


@pytest.fixture(scope="module")
def adapter(tiny_wan_diffusers) -> WanAdapter:
    return WanAdapter(tiny_wan_diffusers, dtype=torch.float32)


# -- layouts -------------------------------------------------------------------------------------------------


def test_three_layouts_give_the_same_transformer(adapter, tiny_wan_original, tiny_wan_diffusers,
                                                 tiny_wan_single_file, tiny_wan_single_file_fp8):
    # Same weights loaded by another path sit at other memory alignments, for which CPU matmul kernels sum in
    # another order (a deep copy of one model differs by ~1e-6 too): "same" means equal to fp32 rounding.
    same = dict(rtol=1e-5, atol=1e-5)
    x, t, c = inputs()
    with torch.no_grad():
        ref = adapter.predict(x, t, c)
        original = WanAdapter(tiny_wan_original, dtype=torch.float32)
        assert all(torch.equal(u, v) for u, v in zip(original.load_transformer().state_dict().values(),
                                                      adapter.load_transformer().state_dict().values()))
        torch.testing.assert_close(original.predict(x, t, c), ref, **same)
        single = WanAdapter(tiny_wan_diffusers, tiny_wan_single_file, dtype=torch.float32)
        out = single.predict(x, t, c)
        # The bf16 file holds the fp32 weights rounded to bf16: equal to the reference model so rounded...
        rounded = WanAdapter(tiny_wan_diffusers, dtype=torch.float32)
        for p in rounded.load_transformer().parameters():
            p.copy_(p.to(torch.bfloat16).float())
        torch.testing.assert_close(out, rounded.predict(x, t, c), **same)
        # ...and within bf16's resolution (8 bits of mantissa: 2^-9 relative per weight) of the fp32 model.
        torch.testing.assert_close(out, ref, rtol=0, atol=3e-2 * ref.abs().max().item())
        assert not torch.equal(out, ref)
        # fp8 (e4m3: 3 mantissa bits) with the model.diffusion_model. prefix: loads, and is near the model.
        fp8 = WanAdapter(tiny_wan_diffusers, tiny_wan_single_file_fp8, dtype=torch.float32).predict(x, t, c)
        assert (fp8 - ref).norm() / ref.norm() < 0.15

    def dtypes(*paths) -> dict:
        return {n: p.dtype for n, p in WanAdapter(*paths, dtype=torch.bfloat16).load_transformer().named_parameters()}

    # In bf16 every layout keeps the same modules (norms, modulation, time embedder) in float32.
    want = dtypes(tiny_wan_diffusers)
    assert {torch.bfloat16, torch.float32} == set(want.values())
    assert dtypes(tiny_wan_original) == want == dtypes(tiny_wan_diffusers, tiny_wan_single_file_fp8)


def test_base_model_name_from_config(adapter):
    assert adapter.base_model_name() == "wan2.1-i2v-custom-32"
    real = dict(num_attention_heads=40, attention_head_dim=128, image_dim=1280)
    assert base_model_name(real) == "wan2.1-i2v-14b"
    assert base_model_name({**real, "pos_embed_seq_len": 514}) == "wan2.1-flf2v-14b"


# -- conditioning equals the reference pipeline --------------------------------------------------------------


def test_i2v_input_equals_what_the_pipeline_feeds_its_transformer(adapter, tiny_wan_diffusers, tmp_path):
    from diffusers import WanImageToVideoPipeline

    source, prompt, seed = frames(), "a red car on a road", 7
    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan_diffusers)
    pipe.set_progress_bar_config(disable=True)
    seen = {}
    pipe.transformer.register_forward_pre_hook(lambda m, a, kw: seen.update(kw) if not seen else None,
                                               with_kwargs=True)
    # The image is already the target size, so the pipeline's resize leaves its pixels as they are.
    pipe(image=Image.fromarray(source[0]), prompt=prompt, height=H, width=W, num_frames=T, num_inference_steps=1,
         guidance_scale=1.0, generator=torch.Generator().manual_seed(seed), output_type="latent")

    sample = video_sample(source, np.zeros((T, H, W), bool), prompt, mode="naive")  # naive = the i2v preset
    (enc,), _ = encode_samples(adapter, [sample], EncodeCache(tmp_path))
    noisy = torch.randn((1, 16, 2, H // 8, W // 8), generator=torch.Generator().manual_seed(seed))
    ours = adapter.transformer_input(noisy, enc.cond[None])
    assert ours.shape == (1, 36, 2, 4, 4)
    assert torch.equal(ours, seen["hidden_states"])  # noise, 4-channel mask and y: exactly
    assert torch.equal(enc.text[None], seen["encoder_hidden_states"])
    assert torch.equal(enc.image[None], seen["encoder_hidden_states_image"])


# -- layers and memory options -------------------------------------------------------------------------------


def test_layer_list_equals_predict_with_lora_and_checkpointing(tiny_wan_diffusers):
    a = WanAdapter(tiny_wan_diffusers, dtype=torch.float32)
    x, t, c = inputs()
    with torch.no_grad():
        assert torch.equal(run_layers(a.layers(), a.first_layer_input(x, t, c)), a.predict(x, t, c))
    add_lora(a.load_transformer(), a.lora_target_modules(train_image_kv=True), 4, 8.0)
    randomize_lora(a.load_transformer())
    pred = a.predict(x, t, c)
    layered = run_layers(checkpoint_layers(a.layers()), a.first_layer_input(x, t, c))
    assert torch.equal(layered, pred)
    params = [p for p in a.load_transformer().parameters() if p.requires_grad]
    g_pred = torch.autograd.grad(pred.square().mean(), params)
    g_layers = torch.autograd.grad(layered.square().mean(), params)
    for u, v in zip(g_pred, g_layers):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-7)


def test_gradient_checkpointing_gives_equal_lora_gradients(tiny_wan_diffusers):
    a = WanAdapter(tiny_wan_diffusers, dtype=torch.float32)
    params = add_lora(a.load_transformer(), a.lora_target_modules(), 4, 4.0)
    assert params and all(p.requires_grad and p.dtype == torch.float32 for p in params)
    assert {p for p in a.load_transformer().parameters() if p.requires_grad} == set(params)
    randomize_lora(a.load_transformer())
    x, t, c = inputs()

    def grads() -> list[torch.Tensor]:
        return list(torch.autograd.grad(a.predict(x, t, c).square().mean(), params))

    plain = grads()
    a.enable_checkpointing()
    assert a.load_transformer().is_gradient_checkpointing
    for u, v in zip(plain, grads()):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-7)  # recomputation is the same arithmetic


def test_float8_storage_trains_and_stays_close_to_bf16(tiny_wan_diffusers):
    cfg = ModelConfig(ckpt_path=str(tiny_wan_diffusers), dtype="bfloat16", transformer_dtype="float8")
    fp8 = make_adapter(cfg, "cpu")
    bf16 = make_adapter(ModelConfig(ckpt_path=str(tiny_wan_diffusers), dtype="bfloat16"), "cpu")
    results = []
    for a in (fp8, bf16):
        model = a.load_transformer()
        add_lora(model, a.lora_target_modules(), 4, 4.0, dtype="float32")
        randomize_lora(model)
        x, t, c = inputs()
        out = a.predict(x, t, c)
        out.float().square().mean().backward()
        results.append((out.float(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    q = fp8.load_transformer().blocks[0].attn1.to_q
    assert q.base_layer.weight.dtype == torch.float8_e4m3fn  # stored in fp8 between forwards
    assert q.lora_A["default"].weight.dtype == torch.float32  # LoRA never cast
    (o8, g8), (o16, g16) = results
    # e4m3 keeps 3 mantissa bits (relative rounding up to 2^-4 per weight); errors average over each dot
    # product: measured 3.4% (outputs) and 3.9% (LoRA gradients), relative L2; bounds ~3x that.
    assert torch.isfinite(o8).all() and torch.isfinite(g8).all()
    assert (o8 - o16).norm() / o16.norm() < 0.1
    assert (g8 - g16).norm() / g16.norm() < 0.12


# -- the encode cache ----------------------------------------------------------------------------------------


def test_encode_cache_hit_on_second_run_and_only_changed_entries_recomputed(tiny_wan_diffusers, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_wan_diffusers, model)
    cache = EncodeCache(tmp_path / "cache")
    src, edit = frames(0), np.zeros((T, H, W), bool)
    edit[:, 8:24, 8:24] = True
    samples = [video_sample(src, edit, "a dog"), video_sample(frames(1), edit, "a dog", name="b")]

    def run(samples, loads=None):
        a = WanAdapter(model, dtype=torch.float32)
        seen = loads if loads is not None else []
        for name in ("vae", "text_encoder", "image_encoder"):
            loader = getattr(a.weights, name)
            setattr(a.weights, name, lambda dtype, n=name, f=loader: seen.append(n) or f(dtype))
        before = (cache.hits, cache.misses)
        enc, _ = encode_samples(a, samples, cache)
        assert not {"vae", "text_encoder", "image_encoder"} & set(a.components)  # freed after encoding
        return enc, seen, (cache.hits - before[0], cache.misses - before[1])

    first, loads, (_, misses) = run(samples)
    # 2 x (condition + target) videos, 1 prompt, 2 images
    assert sorted(loads) == ["image_encoder", "text_encoder", "vae"] and misses == 7
    again, loads, (hits, misses) = run(samples)
    assert loads == [] and misses == 0 and hits == 7  # no encoder loaded at all
    for u, v in zip(first, again):
        assert torch.equal(u.cond, v.cond) and torch.equal(u.text, v.text) and torch.equal(u.latents, v.latents)

    changed = [samples[0], video_sample(frames(1), edit, "a cat", name="b")]
    _, loads, (hits, misses) = run(changed)
    assert loads == ["text_encoder"] and misses == 1 and hits == 7  # "a cat" is new

    vae_file = model / "vae" / "diffusion_pytorch_model.safetensors"
    os.utime(vae_file, (vae_file.stat().st_atime, vae_file.stat().st_mtime + 10))  # replaced VAE weights
    _, loads, (hits, misses) = run(samples)
    assert loads == ["vae"] and misses == 4 and hits == 3  # only the latents depend on the VAE


# -- config, errors, quiet loading ---------------------------------------------------------------------------


def test_make_adapter_maps_config_dtypes(tiny_wan_diffusers):
    a = make_adapter(ModelConfig(ckpt_path=str(tiny_wan_diffusers), dtype="float16"), "cpu")
    assert (a.dtype, a.transformer_dtype, a.device) == (torch.float16, torch.float16, torch.device("cpu"))
    a = make_adapter(ModelConfig(ckpt_path=str(tiny_wan_diffusers), transformer_dtype="float8"), "cpu")
    assert (a.dtype, a.transformer_dtype) == (torch.bfloat16, torch.float8_e4m3fn)
    assert dtype_from_name("float32") is torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'fp64'"):
        dtype_from_name("fp64")
    with pytest.raises(ValueError, match="unknown model.type"):
        make_adapter(ModelConfig(type="hunyuan", ckpt_path=str(tiny_wan_diffusers)), "cpu")


def test_missing_weight_files_are_listed_in_one_message(tiny_wan_diffusers, tiny_wan_original, tmp_path):
    d = shutil.copytree(tiny_wan_diffusers, tmp_path / "d")
    (d / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    (d / "transformer" / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    with pytest.raises(WeightsError) as e:
        WanAdapter(d)
    assert isinstance(e.value, UserError) and "2 file(s) are missing" in str(e.value)
    assert "vae/diffusion_pytorch_model.safetensors" in str(e.value)
    assert "transformer/diffusion_pytorch_model-00002-of-00003.safetensors" in str(e.value)
    o = shutil.copytree(tiny_wan_original, tmp_path / "o")
    for name in ("Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth"):
        (o / name).unlink()
    with pytest.raises(WeightsError, match=r"(?s)2 file\(s\) are missing.*Wan2.1_VAE.pth.*models_t5"):
        WanAdapter(o)
    with pytest.raises(WeightsError, match="is not a file"):
        WanAdapter(tiny_wan_diffusers, tmp_path / "nope.safetensors")


def test_loading_every_component_is_quiet(tiny_wan_diffusers, tiny_wan_original, tiny_wan_single_file_fp8, capfd):
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    loggers = [logging.getLogger(n) for n in ("diffusers", "transformers")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        for a in (WanAdapter(tiny_wan_diffusers, tiny_wan_single_file_fp8), WanAdapter(tiny_wan_original)):
            a.load_vae(), a.load_text_encoder(), a.load_image_encoder(), a.load_transformer()
            a.encode_image(torch.zeros(1, 3, H, W))
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    err = capfd.readouterr().err
    assert not [r.getMessage() for r in records]
    for noise in ("should be kept in float32", "LOAD REPORT", "UNEXPECTED", "requires torchvision"):
        assert noise not in err


def test_pipeline_blocks_skip_constant_gradients_but_train_the_same(tiny_wan_diffusers):
    """Pipeline runs (engine.train.trainer.pipeline_layers): the per-step constants crossing a stage boundary require
    grad, but blocks compute no gradient for them (only a zero one, which DeepSpeed needs to send back); the
    prediction and the LoRA gradients stay exactly those of the plain layer list."""
    from engine.train.trainer import GradBoundary, pipeline_layers

    a = WanAdapter(tiny_wan_diffusers, dtype=torch.float32)
    params = add_lora(a.load_transformer(), a.lora_target_modules(), 4, 4.0)
    randomize_lora(a.load_transformer())
    x, t, c = inputs()

    def step(layers: list) -> tuple[torch.Tensor, list[torch.Tensor], tuple]:
        first = a.first_layer_input(x, t, c)
        boundary = GradBoundary()(layers[0](first))  # what a later stage receives: every float requires grad
        out = run_layers(checkpoint_layers(layers[2:]), boundary)
        const = [v for v in boundary[1:] if v.requires_grad]
        grads = torch.autograd.grad(out.square().mean(), [*params, *const], allow_unused=True)
        return out, list(grads[:len(params)]), grads[len(params):]

    plain_out, plain_grads, plain_const = step([*a.layers()[:1], GradBoundary(), *a.layers()[1:]])
    out, grads, const = step(pipeline_layers(a, 2))
    assert torch.equal(out, plain_out)
    for u, v in zip(plain_grads, grads):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-7)
    text, tproj, temb = 0, 1, 2  # positions in `const`: (text, tproj, temb, cos, sin)
    for i in (text, tproj):  # used by every block: a real gradient before, a zero one now
        assert plain_const[i].abs().sum() > 0 and torch.count_nonzero(const[i]) == 0
    torch.testing.assert_close(const[temb], plain_const[temb])  # only the head uses it: its gradient stays
