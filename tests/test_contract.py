"""The model-family contract, for every registered family (finetrainers-style dummy-model tests).

A family gets these tests by registering its `FamilySpec` (models/registry.py): each test builds the family's tiny
random model with its own builder and checks, for every expert, what the engine relies on: the layer list equals
`predict`, the packed mask and condition channels fit the transformer, the encode cache gives back what the
encoders made without loading them again, a LoRA saved in each layout the family writes loads back to the same
output, two training steps run through train.py's job function (one LoRA file per expert), and a sample comes out.
Wan2.2-I2V-A14B (models/wan22/) has two experts, so the expert paths run on a real family.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from synthetic import write_square_job

from config.loader import load_config
from datasets.job import load_job, training_samples
from engine.encode.cache import EncodeCache
from engine.encode.samples import encode_samples
from models.base import ModelAdapter
from models.lora import add_lora, load_lora_weights_into, lora_state_dict, save_lora_state
from models.registry import detect_family, family, make_adapter, names

T, W, H = 5, 32, 32  # 4k+1 frames; 32x32 pixels -> a 4x4 latent grid
RANK = 4


@pytest.fixture(scope="module", params=names())
def fam(request, tmp_path_factory) -> tuple:
    """(spec, tiny model folder, job folder) of one registered family."""
    spec = family(request.param)
    root = tmp_path_factory.mktemp(f"contract-{spec.name}")
    model = spec.build_tiny(root / "model", "diffusers", seed=0)
    job = root / "job"
    job.mkdir()
    write_square_job(job, model, t=T, w=W, h=H, steps=4, step=2, model_type=spec.name)
    with open(job / "edit.toml", "a") as fh:
        fh.write(f"[adapter]\nrank = {RANK}\n[training]\nsteps = 4\nreference_steps = 0\nsave_every_n_steps = 0\n"
                 "checkpoint_every_n_minutes = 0\nactivation_checkpointing = false\n[optimizer]\nlr = 1e-3\n")
    return spec, model, job


def config(job: Path, tmp_path: Path, *overrides: str):
    return load_config(job / "edit.toml", [f"data.cache_dir='{tmp_path / 'cache'}'", f"output_dir='{tmp_path}'",
                                           *overrides])


def encoded_video(adapter, cfg, cache_dir: Path):  # noqa: ANN001, ANN201
    samples = training_samples(cfg, load_job(cfg, edited=False))["video"]
    (enc,), _ = encode_samples(adapter, samples, EncodeCache(cache_dir))
    return samples[0], enc


def timestep_of(expert) -> torch.Tensor:  # noqa: ANN001
    """A timestep inside the expert's range."""
    return torch.tensor([min(expert.low + 50.0, (expert.low + min(expert.high, 1000.0)) / 2)])


def test_family_record_is_complete(fam):
    spec, model, _ = fam
    assert detect_family(model) == spec.name
    assert spec.expert_for(999.0) and spec.expert_for(0.0)  # every timestep has its expert
    assert {"comfyui", "diffusers"} <= set(spec.formats().FORMATS)
    assert spec.planner().variants and spec.default_fps > 0 and spec.default_frames % 4 == 1
    assert issubclass(spec.adapter_class(), ModelAdapter)


def test_layers_in_sequence_equal_predict(fam, tmp_path):
    spec, _, job = fam
    cfg = config(job, tmp_path)
    adapter = make_adapter(cfg.model, "cpu")
    _, enc = encoded_video(adapter, cfg, tmp_path / "cache")
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(enc.latents[None].shape, generator=g)
    model_input = adapter.transformer_input(noisy, enc.cond[None])
    for expert in adapter.experts():
        t = timestep_of(expert)
        with torch.no_grad():
            whole = adapter.predict(model_input, t, enc.conditioning(), expert=expert.name)
            x = adapter.first_layer_input(model_input, t, enc.conditioning())
            for layer in adapter.layers(expert.name):
                x = layer(x)
        assert whole.shape == noisy.shape, expert.name
        torch.testing.assert_close(x, whole, rtol=1e-5, atol=1e-5, msg=expert.name)


def test_packed_mask_and_condition_channels_fit_the_transformer(fam, tmp_path):
    spec, _, job = fam
    cfg = config(job, tmp_path)
    adapter = make_adapter(cfg.model, "cpu")
    sample, enc = encoded_video(adapter, cfg, tmp_path / "cache")
    packed = adapter.pack_mask(sample.m_condition)
    grid = ((T - 1) // adapter.temporal_compression + 1, H // adapter.spatial_compression,
            W // adapter.spatial_compression)
    assert tuple(enc.latents.shape[1:]) == grid and tuple(packed.shape[1:]) == grid
    assert torch.equal(adapter.pack_mask(torch.ones(1, T, H, W)), torch.ones_like(packed))
    assert torch.equal(adapter.pack_mask(torch.zeros(1, T, H, W)), torch.zeros_like(packed))
    cond = adapter.condition_channels(packed[None], enc.latents[None])  # (target latents for the condition's)
    assert cond.shape[1:] == enc.cond.shape  # the shape the encode path stores
    model_input = adapter.transformer_input(torch.zeros_like(enc.latents[None]), cond)
    for expert in adapter.experts():
        config_ = adapter.load_transformer(expert=expert.name).config
        assert model_input.shape[1] == config_.in_channels and enc.latents.shape[0] == config_.out_channels


def test_encode_cache_round_trip_loads_no_encoder(fam, tmp_path):
    spec, _, job = fam
    cfg = config(job, tmp_path)
    samples = training_samples(cfg, load_job(cfg, edited=False))["video"]
    first_cache = EncodeCache(tmp_path / "cache")
    first, _ = encode_samples(make_adapter(cfg.model, "cpu"), samples, first_cache)
    assert first_cache.misses > 0
    again = make_adapter(cfg.model, "cpu")
    cache = EncodeCache(tmp_path / "cache")
    second, _ = encode_samples(again, samples, cache)
    assert cache.misses == 0 and cache.hits == first_cache.misses and again.components == {}
    for a, b in zip(first, second):
        for name in ("latents", "cond", "text", "image", "text_mask", "pooled", "generate"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None) and (x is None or torch.equal(x, y)), name


def _with_random_lora(adapter, expert: str, seed: int) -> torch.nn.Module:  # noqa: ANN001
    model = adapter.load_transformer(expert=expert)
    add_lora(model, adapter.lora_target_modules(), RANK, float(RANK))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:  # as trained, rounded to bf16 as files store it
                p.copy_((torch.randn(p.shape, generator=g) * 0.2).bfloat16().float())
    return model


def test_lora_saved_in_every_layout_loads_back_to_the_same_output(fam, tmp_path):
    spec, _, job = fam
    cfg = config(job, tmp_path)
    adapter = make_adapter(cfg.model, "cpu")
    _, enc = encoded_video(adapter, cfg, tmp_path / "cache")
    model_input = adapter.transformer_input(torch.randn(enc.latents[None].shape), enc.cond[None])
    writable = [f for f in spec.formats().FORMATS if f in ("comfyui", "diffusers")]
    several = len(adapter.experts()) > 1
    for i, expert in enumerate(adapter.experts()):
        t = timestep_of(expert)
        trained = _with_random_lora(adapter, expert.name, seed=3 + i)
        with torch.no_grad():
            want = adapter.predict(model_input, t, enc.conditioning(), expert=expert.name)
            base = make_adapter(cfg.model, "cpu").predict(model_input, t, enc.conditioning(), expert=expert.name)
        assert (want - base).abs().max() > 1e-3, expert.name  # the LoRA has an effect
        state = lora_state_dict(trained)
        sources: dict[str, object] = {"peft dict": state}
        for fmt in writable:
            path = tmp_path / f"{expert.name}-{fmt}{expert.suffix}.safetensors"
            sources[fmt] = save_lora_state(path, state, trained, fmt=fmt, rank=RANK, alpha=float(RANK),
                                           several_experts=several)
        for label, source in sources.items():
            fresh = make_adapter(cfg.model, "cpu")
            report = load_lora_weights_into(fresh.load_transformer(expert=expert.name), source)
            assert report.unmatched == [] and report.modules == len(state) // 2, (expert.name, label)
            with torch.no_grad():
                got = fresh.predict(model_input, t, enc.conditioning(), expert=expert.name)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=f"{expert.name} {label}")
            if label != "peft dict" and several:
                from models.lora import lora_expert
                from models.lora_files import read_lora_file

                assert lora_expert(source, read_lora_file(Path(source))[1], adapter.experts()) == expert


def test_two_training_steps_then_a_sample(fam, tmp_path):
    """train.py's and infer.py's job functions in this process: each expert trains and gets its LoRA file, the
    sampler runs every expert over its timesteps with them, and the frames come out at the job's size."""
    from engine.infer.generate import LoraSpec, build_request, generate
    from engine.train.job import run_training

    spec, _, job = fam
    cfg = config(job, tmp_path)
    events = []
    result = run_training(cfg, progress=events.append)
    assert result.steps == 4 and not result.interrupted and all(torch.isfinite(torch.tensor(result.losses)))
    experts = spec.experts
    assert set(result.loras) == {e.name for e in experts}
    for expert in experts:
        assert result.loras[expert.name].name == f"lora{expert.suffix}.safetensors"
        assert result.loras[expert.name].is_file()
    steps = [e.step for e in events if e.phase == "train"]
    assert steps == list(range(0, 5)) and all("loss" in e.figures for e in events if e.phase == "train" and e.step)
    metrics = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    if len(experts) > 1:  # each step trained the expert its timestep belongs to; both got steps here
        assert {m["expert"] for m in metrics} == {e.name for e in experts}

    used = []
    adapter_cls = spec.adapter_class()
    original = adapter_cls.predict

    def recording(self, model_input, timestep, c, expert=None):  # noqa: ANN001, ANN202
        used.append(expert or self.expert_for(timestep).name)  # a one-expert family is called without one
        return original(self, model_input, timestep, c, expert)

    denoise = []
    request = build_request(cfg, [LoraSpec(p) for p in result.loras.values()])
    adapter_cls.predict = recording
    try:
        gen = generate(cfg, request, progress=lambda e: denoise.append(e) if e.phase == "denoise" else None)
    finally:
        adapter_cls.predict = original
    assert gen.frames.shape == (T, H, W, 3) and gen.frames.dtype.name == "uint8"
    assert [e.step for e in denoise] == list(range(0, 5))
    assert set(used) == {e.name for e in experts}  # the sampler switched experts at the boundary


def test_plan_traces_a_training_and_a_sampling_step(fam, tmp_path):
    """--plan goes through the same contract: the family's planner entry, its adapter without weights, the layer
    list of an expert (a family with several experts: one traced, the others noted in host RAM)."""
    from engine.plan.model import resolve_model
    from engine.plan.report import plan_training
    from engine.plan.steps import trace_sampling_step

    spec, model, job = fam
    cfg = config(job, tmp_path, "training.activation_checkpointing=true")
    planned = resolve_model(cfg)
    assert planned.family == spec.name and planned.name == str(model)
    plan = plan_training(cfg, planned)
    assert plan.memory.total > plan.memory.weights > 0 and plan.flops_per_step > 0 and plan.trainable_params > 0
    assert any("experts" in note for note in plan.notes) == (len(spec.experts) > 1)
    sampling = trace_sampling_step(planned, cfg, T, H, W)
    assert sampling.flops > 0 and sampling.peak > sampling.weights
