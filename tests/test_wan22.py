"""Wan2.2-I2V-A14B (models/wan22/): layouts, family detection, config defaults, the experts in training, infer.py
against diffusers' two-expert WanImageToVideoPipeline (with and without a trained LoRA pair), and --plan on 24 GB.

Tolerance of the pipeline comparisons: 1e-5 (max abs, frames in [0, 1]), as tests/test_infer.py's: the same
operations in the same order on the same CPU; a wrong expert at one step or a missed LoRA moves frames by far more.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import write_square_job

from config.errors import UserError
from config.loader import load_config
from datasets.job import load_job
from models.wan22.spec import BOUNDARY, EXPERTS, NEGATIVE_PROMPT

T, H, W = 5, 32, 32
STEPS, SEED = 4, 7  # 4 UniPC steps at shift 5: timesteps 1000 and 9xx (high noise), then 8xx and below
ATOL = 1e-5
FAMILY = "wan2.2-i2v-a14b"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The same tiny two-expert model in the three layouts (single-file: the original folder with the two files)."""
    from models.wan22.tiny import build_tiny_wan22

    root = tmp_path_factory.mktemp("wan22")
    return {layout: build_tiny_wan22(root / layout, layout, seed=0)
            for layout in ("diffusers", "original", "single-file")}


@pytest.fixture(scope="module")
def job(models, tmp_path_factory) -> Path:
    root = write_square_job(tmp_path_factory.mktemp("wan22-job"), models["diffusers"], t=T, w=W, h=H, steps=STEPS,
                            model_type=FAMILY)
    with open(root / "edit.toml", "a") as fh:
        fh.write("[adapter]\nrank = 4\n[training]\nsteps = 4\nreference_steps = 0\nsave_every_n_steps = 0\n"
                 "checkpoint_every_n_minutes = 0\nactivation_checkpointing = false\n[optimizer]\nlr = 0.02\n")
    return root


def config(job: Path, tmp: Path, *overrides: str):  # noqa: ANN201
    return load_config(job / "edit.toml", [f"data.cache_dir='{tmp / 'cache'}'", f"output_dir='{tmp / 'runs'}'",
                                           f"seed={SEED}", *overrides])


def test_every_layout_loads_to_identical_weights_and_is_told_from_wan21(models, tiny_wan_diffusers, tmp_path):
    from config.schema import ModelConfig
    from models.registry import detect_family, make_adapter
    from models.wan22.tiny import single_file_name

    def adapter(folder: Path, *files: str):  # noqa: ANN202
        paths = [str(folder / f) for f in files] + ["", ""]
        return make_adapter(ModelConfig(type=FAMILY, ckpt_path=str(folder), transformer_path=paths[0],
                                        transformer_2_path=paths[1], dtype="float32"), "cpu")

    assert detect_family(models["diffusers"]) == detect_family(models["original"]) == FAMILY
    assert detect_family(tiny_wan_diffusers) == "wan"  # Wan2.1: its configs say so (CLIP, one transformer)
    ref = adapter(models["diffusers"])
    single = models["single-file"]
    others = [adapter(models["original"]),
              adapter(single, single_file_name("high_noise"), single_file_name("low_noise"))]
    for expert in EXPERTS:
        want = ref.load_transformer(expert=expert.name).state_dict()
        for other in others:
            got = other.load_transformer(expert=expert.name).state_dict()
            assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), expert.name
    for other in others:
        for component in ("load_vae", "load_text_encoder"):
            want, got = getattr(ref, component)().state_dict(), getattr(other, component)().state_dict()
            assert all(torch.equal(got[k], want[k]) for k in want), component
    high, low = (ref.load_transformer(expert=e.name).state_dict() for e in EXPERTS)
    assert any(not torch.equal(high[k], low[k]) for k in high)  # two experts, not one twice
    # A Wan2.1 folder given as Wan2.2 (and the reverse) is one line naming the fix.
    with pytest.raises(UserError, match="holds a 'wan' model but model.type = 'wan2.2-i2v-a14b'"):
        make_adapter(ModelConfig(type=FAMILY, ckpt_path=str(tiny_wan_diffusers)), "cpu")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "high_noise_model").mkdir()
    with pytest.raises(UserError, match="missing: high_noise_model/config.json, low_noise_model/config.json"):
        adapter(broken)


def test_config_defaults_and_expert_keys(job, tmp_path):
    cfg = config(job, tmp_path, "inference.steps=0")
    assert (cfg.inference.steps, cfg.inference.guidance, cfg.inference.guidance_2) == (40, 3.5, 3.5)
    assert cfg.training.shift == 5.0 and cfg.data.fps == 16.0
    assert config(job, tmp_path, "inference.guidance=4.0").inference.guidance_2 == 4.0  # as diffusers' scale_2
    with pytest.raises(UserError, match="model.experts .* has no expert 'high'; its experts: high_noise, low_noise"):
        config(job, tmp_path, "model.experts=['high']")
    with pytest.raises(UserError, match="inference.guidance_2 is the second expert's guidance"):
        load_config(None, ["inference.guidance_2=2.0"], check_paths=False)


@pytest.fixture(scope="module")
def trained(job, tmp_path_factory):
    """Both experts trained in one run, recording which expert's transformer embedded which timesteps."""
    from diffusers.models.transformers.transformer_wan import WanTimeTextImageEmbedding

    from engine.train.job import run_training

    tmp = tmp_path_factory.mktemp("wan22-train")
    seen: list[tuple[float, torch.Tensor]] = []

    def record(module, args):  # noqa: ANN001, ANN202
        if isinstance(module, WanTimeTextImageEmbedding):  # the time embedder of whichever expert runs
            seen.append((float(module.time_embedder.linear_1.weight.detach().double().sum()), args[0].detach()))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        result = run_training(config(job, tmp), progress=False)
    finally:
        handle.remove()
    return result, seen, tmp


def _expert_by_weights(models) -> dict[float, str]:  # noqa: ANN001
    from diffusers import WanTransformer3DModel

    out = {}
    for expert, sub in (("high_noise", "transformer"), ("low_noise", "transformer_2")):
        model = WanTransformer3DModel.from_pretrained(models["diffusers"] / sub)
        out[float(model.condition_embedder.time_embedder.linear_1.weight.detach().double().sum())] = expert
    return out


def test_each_step_trains_the_expert_its_timestep_belongs_to(trained, models):
    result, seen, _ = trained
    by_weights = _expert_by_weights(models)
    metrics = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    ran = [(by_weights[key], float(t.reshape(-1)[0])) for key, t in seen]
    assert len(ran) == len(metrics) == 4  # one micro-batch per step, no recomputation
    for (expert, t), step in zip(ran, metrics):
        assert step["expert"] == expert and (t >= BOUNDARY) == (expert == "high_noise"), (step, t)
    assert {e for e, _ in ran} == {"high_noise", "low_noise"}
    assert set(result.loras) == {"high_noise", "low_noise"}
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["experts"]["high_noise"]["timesteps"] == "high_noise (sampler timesteps t >= 900)"
    assert summary["experts"]["low_noise"]["timesteps"] == "low_noise (sampler timesteps t < 900)"


def test_previews_sample_each_step_with_its_expert_in_one_pass(job, tmp_path, models):
    """Training previews on a two-expert model go through the shared sampler: each preview step runs the expert of
    its timestep, once (training.preview_guidance = 1 holds for both experts: no negative pass, no negative prompt
    needed), and the previews land in the run folder."""
    from diffusers.models.transformers.transformer_wan import WanTimeTextImageEmbedding

    from engine.train.job import run_training

    seen: list[tuple[float, float]] = []

    def record(module, args):  # noqa: ANN001, ANN202
        if isinstance(module, WanTimeTextImageEmbedding):
            seen.append((float(module.time_embedder.linear_1.weight.detach().double().sum()),
                         float(args[0].reshape(-1)[0])))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        result = run_training(config(job, tmp_path, "training.steps=2", "training.preview_every_n_steps=1",
                                     f"training.preview_steps={STEPS}"), progress=False)
    finally:
        handle.remove()
    entries = [json.loads(x) for x in (result.run_dir / "previews" / "previews.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [1, 2]
    assert all((result.run_dir / "previews" / e["video"]).is_file() for e in entries)
    by_weights = _expert_by_weights(models)
    ran = [(by_weights[key], t) for key, t in seen]
    assert len(ran) == 2 * (1 + STEPS)  # per training step: its pass, then the preview's STEPS passes
    for k in (1, 2 + STEPS):
        preview = ran[k:k + STEPS]
        times = [t for _, t in preview]
        assert times == sorted(times, reverse=True) and len(set(times)) == STEPS, times
        assert all((t >= BOUNDARY) == (e == "high_noise") for e, t in preview), preview
        assert {e for e, _ in preview} == {"high_noise", "low_noise"}


def test_training_one_expert_leaves_the_other_without_a_lora(job, tmp_path, models):
    from diffusers.models.transformers.transformer_wan import WanTimeTextImageEmbedding

    from engine.train.job import run_training

    seen = []
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda m, a: seen.append((float(m.time_embedder.linear_1.weight.detach().double().sum()), float(a[0][0])))
        if isinstance(m, WanTimeTextImageEmbedding) else None)
    try:
        result = run_training(config(job, tmp_path, "model.experts=['high_noise']", "training.steps=2"),
                              progress=False)
    finally:
        handle.remove()
    by_weights = _expert_by_weights(models)
    assert [by_weights[k] for k, _ in seen] == ["high_noise"] * 2 and all(t >= BOUNDARY for _, t in seen)
    assert set(result.loras) == {"high_noise"} and result.loras["high_noise"].name == "lora_high_noise.safetensors"
    assert sorted(p.name for p in result.run_dir.glob("*.safetensors")) == ["lora_high_noise.safetensors"]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert list(summary["experts"]) == ["high_noise"]


@pytest.fixture(scope="module")
def pipe(models):
    """diffusers' pipeline built as the issue names it: transformer=high, transformer_2=low, boundary_ratio=0.9, no
    image encoder."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    root = models["diffusers"]
    return WanImageToVideoPipeline(
        tokenizer=AutoTokenizer.from_pretrained(root / "tokenizer"),
        text_encoder=UMT5EncoderModel.from_pretrained(root / "text_encoder"),
        vae=AutoencoderKLWan.from_pretrained(root / "vae"),
        scheduler=UniPCMultistepScheduler.from_pretrained(root / "scheduler"),
        transformer=WanTransformer3DModel.from_pretrained(root / "transformer"),
        transformer_2=WanTransformer3DModel.from_pretrained(root / "transformer_2"),
        boundary_ratio=0.9, image_encoder=None, image_processor=None)


def pipeline_frames(pipe, job: Path, guidance: float = 3.5, guidance_2: float | None = None) -> np.ndarray:  # noqa: ANN001
    image = Image.fromarray(load_job(load_config(job / "edit.toml")).edited_first)
    out = pipe(image=image, prompt="p3rs0n, a blue square", negative_prompt=NEGATIVE_PROMPT, height=H, width=W,
               num_frames=T, num_inference_steps=STEPS, guidance_scale=guidance, guidance_scale_2=guidance_2,
               generator=torch.Generator().manual_seed(SEED), output_type="np")
    return out.frames[0]


def ours(job: Path, tmp: Path, *overrides: str, loras=()) -> np.ndarray:  # noqa: ANN001
    from engine.infer.generate import build_request, generate

    cfg = config(job, tmp, "inference.mask_preset='i2v'", *overrides)
    gen = generate(cfg, build_request(cfg, list(loras)), progress=False)
    return ((gen.video + 1) / 2).permute(1, 2, 3, 0).numpy()


def test_i2v_without_lora_equals_the_two_expert_pipeline(job, pipe, tmp_path):
    pipe.scheduler.set_timesteps(STEPS)
    assert {bool(t >= BOUNDARY) for t in pipe.scheduler.timesteps} == {True, False}  # both experts sample
    # the family's defaults: shift 5 (the folder's scheduler), guidance 3.5 for each expert
    np.testing.assert_allclose(ours(job, tmp_path), pipeline_frames(pipe, job), rtol=0, atol=ATOL)
    # each expert's own guidance: inference.guidance (high noise) and guidance_2 (low noise) = the pipeline's pair
    theirs = pipeline_frames(pipe, job, guidance=5.0, guidance_2=2.0)
    got = ours(job, tmp_path, "inference.guidance=5.0", "inference.guidance_2=2.0")
    np.testing.assert_allclose(got, theirs, rtol=0, atol=ATOL)
    assert np.abs(theirs - pipeline_frames(pipe, job, guidance=5.0, guidance_2=5.0)).max() > 1e-3


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
def test_trained_lora_pair_equals_the_pipeline_with_load_into_transformer_2(job, pipe, trained, tmp_path):
    from safetensors import safe_open

    from engine.infer.generate import LoraSpec

    result, _, _ = trained
    high, low = result.loras["high_noise"], result.loras["low_noise"]
    base = pipeline_frames(pipe, job)
    pipe.load_lora_weights(str(high))
    pipe.load_lora_weights(str(low), load_into_transformer_2=True)
    try:
        for model, file in ((pipe.transformer, high), (pipe.transformer_2, low)):  # every key consumed
            with safe_open(str(file), "pt") as f:
                weights = [k for k in f.keys() if not k.endswith(".alpha")]
            loaded = [n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
            assert len(loaded) == len(weights) > 0
        theirs = pipeline_frames(pipe, job)
    finally:
        pipe.unload_lora_weights()
    assert np.abs(theirs - base).max() > 1e-3  # the LoRAs change the frames
    got = ours(job, tmp_path, loras=[LoraSpec(high), LoraSpec(low)])
    np.testing.assert_allclose(got, theirs, rtol=0, atol=ATOL)
    # the same pair named by expert (how another trainer's files, e.g. diffusion-pipe's adapter_model.safetensors,
    # are given) loads the same way
    renamed = tmp_path / "a" / "adapter_model.safetensors", tmp_path / "b" / "adapter_model.safetensors"
    for src, dst in zip((high, low), renamed):
        dst.parent.mkdir()
        dst.write_bytes(src.read_bytes())
    from engine.infer.generate import parse_lora_arg

    specs = [parse_lora_arg(f"high_noise={renamed[0]}"), parse_lora_arg(f"low_noise={renamed[1]}:1.0")]
    np.testing.assert_allclose(ours(job, tmp_path, loras=specs), theirs, rtol=0, atol=ATOL)


def test_plan_on_a_24gb_gpu_fits_with_the_advice(tmp_path):
    """What `python train.py --config <a Wan2.2 job> --plan --gpu-memory 24GB` advises (engine.plan.advice, on composed
    plans as the command's advice is): both experts trained, settings that fit 24 GB."""
    from engine.plan.advice import CONTEXT, advise
    from engine.plan.model import resolve_model
    from engine.plan.report import plan_training, plan_with

    toml = tmp_path / "edit.toml"
    toml.write_text(f"[model]\ntype = '{FAMILY}'\nckpt_path = '/models/Wan2.2-I2V-A14B'\n[data]\nframes = 49\n")
    cfg = load_config(toml, check_paths=False)
    spec = resolve_model(cfg)
    assert spec.name == FAMILY and spec.transformer["image_dim"] is None
    options = advise(cfg, spec, 24 * 2**30)
    assert options and options[-1].fits and "training.blocks_to_swap" in options[-1].changes
    assert options[-1].peak + CONTEXT <= 24 * 2**30
    plan = plan_training(plan_with(cfg, **options[-1].changes), spec, composed=True)
    assert plan.memory.total == options[-1].peak
    assert "2 experts (high_noise, low_noise), 2 trained" in plan.notes[-1] and "host RAM" in plan.notes[-1]
