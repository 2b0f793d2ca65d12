"""infer.py against diffusers' WanImageToVideoPipeline, the loraedit conditioning, outputs, replay, bad input.

Tolerance of the pipeline comparisons: 1e-5 (max abs, frames in [0, 1]). infer.py runs the pipeline's
own operations in the same order on the same CPU (same noise draw, same encoders, same transformer
calls, same scheduler), so the frames come out bit-identical here; the margin only allows for BLAS
kernels that may sum in another order on other CPUs. Any real difference (a wrong mask channel, a
missed LoRA, a shifted timestep) moves frames by 1e-2 or more.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import write_square_job

import media
from config.loader import load_config
from datasets.job import load_job
from datasets.samples import to_tensor
from media.viewing import LABEL_HEIGHT, label_band
from models.wan.spec import NEGATIVE_PROMPT as WAN_NEGATIVE_PROMPT

REPO = Path(__file__).resolve().parents[1]
T, H, W = 5, 32, 48
STEPS, SEED = 3, 7
ATOL = 1e-5
TARGETS = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
           "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"]


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_wan_diffusers) -> Path:
    return write_square_job(tmp_path_factory.mktemp("infer-job"), tiny_wan_diffusers, t=T, w=W, h=H, steps=STEPS)


@pytest.fixture(scope="module")
def pipe(tiny_wan_diffusers):
    from diffusers import WanImageToVideoPipeline

    return WanImageToVideoPipeline.from_pretrained(tiny_wan_diffusers, dtype=torch.float32)


def pipeline_frames(pipe, job: Path, seed: int = SEED, guidance: float = 5.0) -> np.ndarray:
    """The pipeline's frames in [0, 1], [T, H, W, 3], for the job's edited frame at the job's size."""
    image = Image.fromarray(load_job(load_config(job / "edit.toml")).edited_first)
    out = pipe(image=image, prompt="p3rs0n, a blue square", negative_prompt=WAN_NEGATIVE_PROMPT, height=H, width=W,
               num_frames=T, num_inference_steps=STEPS, guidance_scale=guidance,
               generator=torch.Generator().manual_seed(seed), output_type="np")
    return out.frames[0]


def generate(job: Path, *overrides: str, loras=()):
    from engine.infer.generate import LoraSpec, build_request, generate

    cfg = load_config(job / "edit.toml", [f"seed={SEED}", *overrides])
    return generate(cfg, build_request(cfg, [LoraSpec(Path(p), w) for p, w in loras]), progress=False)


def as_unit(gen) -> np.ndarray:
    return ((gen.video + 1) / 2).permute(1, 2, 3, 0).numpy()


def make_lora(tiny: Path, path: Path, seed: int, base_model: str = "wan2.1-i2v-14b-480p") -> Path:
    """A random PEFT LoRA on the tiny transformer, saved in the ComfyUI layout (alpha = rank)."""
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig, get_peft_model_state_dict

    from models.wan.lora_formats import save_lora

    model = WanTransformer3DModel.from_pretrained(tiny / "transformer")
    torch.manual_seed(seed)
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    sd = {k: v * 0.5 for k, v in get_peft_model_state_dict(model).items()}
    return save_lora(path, sd, rank=4, alpha=4.0, base_model=base_model, trigger="p3rs0n,", dtype=torch.float32)


def read_pngs(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))])


@pytest.fixture(scope="module")
def reference(job, pipe) -> np.ndarray:
    """The pipeline's frames without a LoRA."""
    return pipeline_frames(pipe, job)


def test_i2v_without_lora_equals_the_diffusers_pipeline(job, pipe, reference):
    ours = generate(job, "inference.mask_preset='i2v'")
    ref = reference
    assert ours.video.shape == (3, T, H, W)
    np.testing.assert_allclose(as_unit(ours), ref, rtol=0, atol=ATOL)
    # the guidance <= 1 path (one pass per step) matches too
    np.testing.assert_allclose(as_unit(generate(job, "inference.mask_preset='i2v'", "inference.guidance=1.0")),
                               pipeline_frames(pipe, job, guidance=1.0), rtol=0, atol=ATOL)


def test_euler_scheduler_equals_the_pipeline_with_euler(job, pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler

    original = pipe.scheduler
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    try:
        ref = pipeline_frames(pipe, job)
    finally:
        pipe.scheduler = original
    ours = generate(job, "inference.mask_preset='i2v'", "inference.scheduler='euler'", "inference.shift=5.0")
    np.testing.assert_allclose(as_unit(ours), ref, rtol=0, atol=ATOL)


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")  # the pipeline's second adapter
def test_loras_equal_the_pipeline_after_load_lora_weights(job, pipe, reference, tiny_wan_diffusers, tmp_path):
    a = make_lora(tiny_wan_diffusers, tmp_path / "a.safetensors", 1)
    b = make_lora(tiny_wan_diffusers, tmp_path / "b.safetensors", 2)
    pipe.load_lora_weights(str(a))
    try:
        ref_a = pipeline_frames(pipe, job)
        pipe.load_lora_weights(str(b), adapter_name="b")
        pipe.set_adapters(["default_0", "b"], [0.7, 0.4])
        ref_ab = pipeline_frames(pipe, job)
    finally:
        pipe.unload_lora_weights()
    ours_a = generate(job, "inference.mask_preset='i2v'", loras=[(a, 1.0)])
    np.testing.assert_allclose(as_unit(ours_a), ref_a, rtol=0, atol=ATOL)
    assert np.abs(ref_a - reference).max() > 1e-2 and np.abs(ref_ab - ref_a).max() > 1e-2  # LoRAs change frames
    ours_ab = generate(job, "inference.mask_preset='i2v'", loras=[(a, 0.7), (b, 0.4)])
    np.testing.assert_allclose(as_unit(ours_ab), ref_ab, rtol=0, atol=ATOL)


def test_loraedit_conditions_on_the_edited_frame_and_the_kept_source(job, tmp_path, monkeypatch):
    from models.registry import make_adapter
    from models.wan.adapter import WanAdapter

    seen: dict[str, list[torch.Tensor]] = {"video": [], "input": []}
    encode, predict = WanAdapter.encode_video, WanAdapter.predict

    def spy_encode(self, video):
        seen["video"].append(video.clone())
        return encode(self, video)

    def spy_predict(self, model_input, timestep, c):
        seen["input"].append(model_input.clone())
        return predict(self, model_input, timestep, c)

    monkeypatch.setattr(WanAdapter, "encode_video", spy_encode)
    monkeypatch.setattr(WanAdapter, "predict", spy_predict)
    gen = generate(job, f"data.cache_dir='{tmp_path / 'cache'}'")  # fresh cache: the VAE must run
    cfg = load_config(job / "edit.toml")
    j = load_job(cfg)
    (video,) = seen["video"]
    assert video.shape == (1, 3, T, H, W)
    assert torch.equal(video[0, :, 0], to_tensor(j.edited_first[None])[:, 0])  # frame 0: the edited frame
    keep = torch.from_numpy(~j.edit_mask[1:])
    src = to_tensor(j.frames)[:, 1:]
    assert torch.equal(video[0, :, 1:][:, keep], src[:, keep])  # later frames: the source outside the mask
    assert (video[0, :, 1:][:, ~keep] == 0).all()  # ... and nothing inside it
    assert len(seen["input"]) == 2 * STEPS  # cond + uncond per step
    adapter = make_adapter(cfg.model, "cpu")
    packed = adapter.pack_mask(gen.sample.m_condition)
    y = adapter.encode_video(video)
    for model_input in seen["input"]:  # what the transformer got besides the noise: [mask4, y]
        assert torch.equal(model_input[0, 16:20], packed.to(model_input))
        assert torch.equal(model_input[0, 20:], y[0])
    assert packed[:, 0].min() == 1 and packed[:, 1:].min() == 0 and packed[:, 1:].max() == 1


def test_step_cache_reuses_blocks_and_threshold_zero_is_exact(job, monkeypatch):
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    plain = generate(job)
    calls = []
    forward = WanTransformerBlock.forward

    @functools.wraps(forward)  # the cache hooks read the block's signature
    def counting(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(WanTransformerBlock, "forward", counting)
    exact = generate(job, "inference.step_cache=true", "inference.step_cache_threshold=0.0")
    assert torch.equal(exact.video, plain.video)
    full = len(calls)
    calls.clear()
    cached = generate(job, "inference.step_cache=true", "inference.step_cache_threshold=10.0")
    assert len(calls) < full  # blocks after the first were skipped on later steps
    assert not torch.equal(cached.video, plain.video)


def run_infer(*argv: str) -> str:
    """infer.py in this process (the imports are shared); returns what it printed."""
    import contextlib
    import io

    import infer
    from config.cli import run

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run(infer.main, list(argv)) == 0
    return out.getvalue()


def test_cli_outputs_same_seed_and_replay(job, tmp_path, tiny_wan_diffusers, capsys):
    import infer
    from config.cli import run

    lora = make_lora(tiny_wan_diffusers, tmp_path / "runs" / "edit" / "20250101-000000" / "lora.safetensors", 3)
    cfg = ["--config", str(job / "edit.toml"), "--set", f"output_dir='{tmp_path / 'runs'}'", "--seed", "11"]
    printed = run_infer(*cfg, "--out", str(tmp_path / "one"), "--frames-dir", str(tmp_path / "f1"))
    assert f"newest of this job's runs: {lora}" in printed and "done in" in printed
    side = json.loads((tmp_path / "one" / "result.json").read_text())
    assert side["seed"] == 11 and side["steps"] == STEPS and side["guidance"] == 5.0 and side["shift"] == 3.0
    assert side["scheduler"] == "unipc" and side["mask_preset"] == "loraedit"
    assert side["prompt"] == "p3rs0n, a blue square"
    assert side["negative_prompt"] == WAN_NEGATIVE_PROMPT and side["config"]["inference"]["steps"] == STEPS
    assert side["loras"][0]["path"] == str(lora) and side["loras"][0]["weight"] == 1.0
    assert len(side["loras"][0]["sha256"]) == 64
    video = media.read_video(tmp_path / "one" / "result.mp4")
    assert video.frames.shape == (T, H, W, 3) and round(video.fps) == 16
    # the side-by-side is for viewing: labelled panels, the 32x48 job enlarged 8x (nearest); result.mp4 is not
    side_by_side = media.read_video(tmp_path / "one" / "side_by_side.mp4").frames
    assert side_by_side.shape == (T, LABEL_HEIGHT + 8 * H, 3 * 8 * W + 2 * 4, 3)
    band = side_by_side[0, :LABEL_HEIGHT, :8 * W].astype(int)
    assert np.abs(band - label_band(8 * W, "source")).mean() < 12  # the label (through the video codec)
    first = read_pngs(tmp_path / "f1")
    assert first.shape == (T, H, W, 3)
    run_infer(*cfg, "--out", str(tmp_path / "two"), "--frames-dir", str(tmp_path / "f2"))
    assert np.array_equal(read_pngs(tmp_path / "f2"), first)  # same seed, same frames
    run_infer(*cfg, "--seed", "12", "--out", str(tmp_path / "three"), "--frames-dir", str(tmp_path / "f3"))
    assert not np.array_equal(read_pngs(tmp_path / "f3"), first)
    # the sidecar alone reproduces the run
    printed = run_infer("--replay", str(tmp_path / "one" / "result.json"), "--frames-dir", str(tmp_path / "f4"))
    assert "identical frames" in printed and (tmp_path / "one" / "replay" / "result.mp4").exists()
    assert np.array_equal(read_pngs(tmp_path / "f4"), first)
    # ... and refuses to pretend when an input changed
    make_lora(tiny_wan_diffusers, lora, 4)
    assert run(infer.main, ["--replay", str(tmp_path / "one" / "result.json")]) == 2
    assert "changed since" in capsys.readouterr().err


def test_composite_keeps_every_kept_pixel_exactly_with_the_default_feather(job, tmp_path):
    """The feather ramps inward only: no kept pixel, however close to the mask, differs from the source."""
    run_infer("--config", str(job / "edit.toml"), "--no-lora", "--composite",
              "--out", str(tmp_path / "out"), "--frames-dir", str(tmp_path / "frames"), "--no-side-by-side")
    frames = read_pngs(tmp_path / "frames")
    j = load_job(load_config(job / "edit.toml"))
    background = j.frames.copy()
    background[0] = j.edited_first
    kept = ~j.edit_mask
    kept[0] = True  # loraedit keeps frame 0 whole: the edited frame
    assert np.array_equal(frames[kept], background[kept])
    assert np.abs(frames[j.edit_mask].astype(int) - background[j.edit_mask]).mean() > 5  # the region is generated
    assert (tmp_path / "out" / "generated.mp4").exists()


@pytest.fixture(scope="module")
def bad_inputs(job, tmp_path_factory, tiny_wan_diffusers) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Each bad input run as a user would (subprocess), all at once."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("bad")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(root / "small.png")
    make_lora(tiny_wan_diffusers, root / "hunyuan.safetensors", 4, base_model="hunyuanvideo-i2v")
    save_file({"foo.bar.lora_A.weight": torch.zeros(4, 32), "foo.bar.lora_B.weight": torch.zeros(32, 4)},
              str(root / "nothing.safetensors"))
    wide = {f"diffusion_model.blocks.0.self_attn.q.lora_{x}.weight": torch.zeros(s) for x, s in (("A", (4, 64)),
                                                                                                  ("B", (64, 4)))}
    save_file(wide, str(root / "wide.safetensors"))
    cases = {
        "edited_frame": ["--no-lora", "--edited-frame", str(root / "small.png")],
        "missing_lora": ["--lora", str(root / "missing.safetensors")],
        "other_base_model": ["--lora", str(root / "hunyuan.safetensors")],
        "other_size": ["--lora", str(root / "wide.safetensors")],
        "keys_match_nothing": ["--lora", str(root / "nothing.safetensors")],
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = {k: subprocess.Popen([sys.executable, "infer.py", "--config", str(job / "edit.toml"), "--out",
                                  str(root / k), *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env) for k, argv in cases.items()}
    results = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        results[k] = (subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr), root / k)
    return results


@pytest.mark.parametrize("case, expected", [
    ("edited_frame", r"small.png: edited frame is 50x50.*48x32"),
    ("missing_lora", r"LoRA file not found: .*missing.safetensors"),
    ("other_base_model", r"hunyuan.safetensors is a LoRA for 'hunyuanvideo-i2v'"),
    ("other_size", r"wide.safetensors: LoRA does not fit this model.*hidden size is 64"),
    ("keys_match_nothing", r"nothing.safetensors: Unknown LoRA key layout"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad_inputs, case, expected):
    import re

    proc, out = bad_inputs[case]
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "step/s" not in line and "it/s" not in line]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_lora_arguments_and_newest_run_lora(tmp_path):
    from engine.infer.generate import parse_lora_arg, resolve_loras

    assert parse_lora_arg("a.safetensors:0.5").weight == 0.5
    assert parse_lora_arg("C:/x/a.safetensors").path.name == "a.safetensors"  # a drive letter is not a weight
    assert parse_lora_arg("a.safetensors").weight == 1.0
    cfg = load_config(None, [f"output_dir='{tmp_path}'", "name='job'"])
    loras, note = resolve_loras(cfg, None)
    assert loras == [] and note.startswith("warning: no LoRA given")
    old = tmp_path / "job" / "20250101-000000" / "lora.safetensors"
    new = tmp_path / "job" / "20250102-000000" / "lora_step000050.safetensors"
    for p, t in ((old, 2_000_000_000), (new, 1_000_000_000)):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
        os.utime(p, (t, t))
    (loras,), note = resolve_loras(cfg, None)
    assert loras.path == old and str(old) in note  # newest by time written, not by name
    assert resolve_loras(cfg, None, use_none=True)[0] == []
