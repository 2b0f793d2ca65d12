"""--plan: planned memory and FLOPs against real CPU runs of the trainer and the sampler; the 14B plan's
speed, RAM and advice; argument errors."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from config.errors import UserError
from config.schema import Config

REPO = Path(__file__).resolve().parents[1]
# Wide enough that activations are megabytes, small enough that a step takes a fraction of a second.
SIZES = {"transformer": dict(num_attention_heads=4, attention_head_dim=32, ffn_dim=384, num_layers=3)}
CASES = [(17, 64, 64), (9, 96, 64), (21, 128, 128)]  # (frames, height, width)
TOLERANCE = 0.15


@pytest.fixture(scope="module")
def plan_model(tmp_path_factory) -> Path:
    from models.wan.tiny import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("plan-model") / "tiny", "diffusers", seed=0, sizes=SIZES)


def tiny_config(model: Path) -> Config:
    cfg = Config()
    cfg.model.ckpt_path = str(model)
    cfg.model.dtype = "float32"  # what a CPU run computes in
    return cfg


@pytest.mark.parametrize("checkpointing, storage", [(True, ""), (False, ""), (True, "float8")])
def test_planned_training_step_matches_real_trainer(plan_model, checkpointing, storage):
    """The Trainer (DeepSpeed engine, LoRA, checkpointing, float8 storage) on this CPU, measured by the
    allocator's own events and torch's FLOP counter, against the plan traced on the meta device."""
    from engine.plan.measure import measure_training_steps
    from engine.plan.model import resolve_model
    from engine.plan.report import device_memory
    from engine.plan.steps import trace_training_step

    cfg = tiny_config(plan_model)
    cfg.model.transformer_dtype = storage
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: more threads only spin (and a loaded machine makes that slow)
    try:
        measured = measure_training_steps(cfg, CASES if not storage else CASES[-1:], checkpointing)
    finally:
        torch.set_num_threads(threads)
    spec = resolve_model(cfg)
    peaks = {}
    for m in measured:
        trace = trace_training_step(spec, cfg, m.frames, m.height, m.width, checkpointing=checkpointing)
        memory = device_memory(trace, cfg)
        # Resident before a step: weights, LoRA and the optimizer's state.
        assert abs(trace.weights + memory.optimizer_state - m.resident) <= TOLERANCE * m.resident
        planned = trace.peak - trace.weights  # the step's own peak: inputs, activations, gradients
        assert abs(planned - m.peak_above_resident) <= TOLERANCE * m.peak_above_resident, (m, planned)
        assert abs(trace.flops - m.flops) <= TOLERANCE * m.flops, (m, trace.flops)
        peaks[m.frames] = m.peak_above_resident
    if not storage:
        assert peaks[21] > 2 * peaks[9]  # the cases differ enough for the comparison to mean something


def test_checkpointing_releases_recomputed_activations(plan_model):
    """Per extra block, a checkpointed step keeps only the block's input (one hidden state); without
    checkpointing every activation of the block stays. A trace that pinned the recomputed activations
    (the known trap) would show the no-checkpoint growth with checkpointing on."""
    from engine.plan.model import resolve_model
    from engine.plan.steps import trace_training_step

    cfg = tiny_config(plan_model)
    spec = resolve_model(cfg)
    frames, height, width = 21, 128, 128
    tokens = spec.shapes(frames, height, width).tokens
    hidden = tokens * spec.transformer["num_attention_heads"] * spec.transformer["attention_head_dim"] * 4

    def growth(checkpointing: bool) -> int:
        small, large = (trace_training_step(spec, cfg, frames, height, width, checkpointing=checkpointing,
                                            num_blocks=n) for n in (3, 6))
        block_weights_and_grads = (large.weights + large.grads - small.weights - small.grads) / 3
        return (large.peak - small.peak) / 3 - block_weights_and_grads

    assert growth(True) == pytest.approx(hidden, rel=0.1)
    assert growth(False) > 8 * hidden


def test_composed_step_equals_full_trace(plan_model):
    from engine.plan.model import resolve_model
    from engine.plan.steps import composed_step, trace_training_step

    cfg = tiny_config(plan_model)
    spec = resolve_model(cfg).with_blocks(6)
    full = {}
    for swap in (0, 3):  # 3 resident + 3 swapped: both extrapolations of the composition
        full[swap] = trace_training_step(spec, cfg, 9, 64, 64, checkpointing=True, blocks_to_swap=swap)
        composed = composed_step(spec, cfg, 9, 64, 64, checkpointing=True, blocks_to_swap=swap)
        for name in ("weights", "after_forward", "peak", "grads", "flops", "offloaded", "frozen_params"):
            assert getattr(composed, name) == pytest.approx(getattr(full[swap], name), rel=0.01), (name, swap)
    # Swapped blocks leave the device: weights fall by the offloaded bytes.
    assert full[3].offloaded > 0 and full[3].weights == pytest.approx(full[0].weights - full[3].offloaded, rel=0.01)


def test_planned_sampling_pass_matches_real_predict(plan_model):
    from engine.plan.measure import allocator_peak, cpu_flop_counter
    from engine.plan.model import resolve_model
    from engine.plan.steps import trace_sampling_step
    from models.base import Conditioning
    from models.lora import add_lora
    from models.registry import make_adapter

    cfg = tiny_config(plan_model)
    spec = resolve_model(cfg)
    frames, height, width = 21, 128, 128
    planned = trace_sampling_step(spec, cfg, frames, height, width)
    adapter = make_adapter(cfg.model, "cpu")
    model = adapter.load_transformer()
    add_lora(model, adapter.lora_target_modules(), cfg.adapter.rank, float(cfg.adapter.rank))
    model.requires_grad_(False)
    s = spec.shapes(frames, height, width)
    x = torch.zeros(1, s.latents[0] + s.cond[0], *s.latents[1:])
    c = Conditioning(None, torch.zeros(1, *s.text), torch.zeros(1, *s.image))
    with torch.no_grad():
        peak, _ = allocator_peak(lambda: adapter.predict(x, torch.tensor([500.0]), c))
        with cpu_flop_counter() as counter:
            adapter.predict(x, torch.tensor([500.0]), c)
    assert abs((planned.peak - planned.weights - planned.inputs) - peak) <= TOLERANCE * peak
    assert planned.flops == pytest.approx(counter.get_total_flops(), rel=TOLERANCE)


def test_long_job_plans_one_window(plan_model):
    """A long job trains and samples one window at a time: its plan is the plan of a job of the window's length,
    however long the clip; advice for a GPU too small for the window shortens the window, not data.frames."""
    from engine.plan.advice import CONTEXT, advise, planned_peak
    from engine.plan.model import job_size, resolve_model

    short, long = tiny_config(plan_model), tiny_config(plan_model)
    short.data.frames, short.data.height, short.data.width = 17, 64, 64
    long.data.frames, long.data.window, long.data.height, long.data.width = 97, 17, 64, 64
    for cfg in (short, long):  # every cheaper setting already on, no shorter clips to train on: fewer traces (CI)
        cfg.training.activation_checkpointing, cfg.adapter.dtype, cfg.training.clip_frames = True, "bfloat16", 17
        cfg.model.transformer_dtype = "float8"
    spec = resolve_model(short).with_blocks(2)
    assert job_size(long, spec) == job_size(short, spec) == (17, 64, 64)
    full = planned_peak(long, spec, {})
    assert full == planned_peak(short, spec, {})
    floor = planned_peak(long, spec, {"data.window": 5, "training.blocks_to_swap": spec.blocks})
    last = advise(long, spec, floor + CONTEXT + (full - floor) // 8)[-1]
    assert last.fits and 5 <= last.changes["data.window"] < 17 and "data.frames" not in last.changes


def _plan(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    toml = tmp_path / "edit.toml"
    toml.write_text("[model]\nckpt_path = '/not/downloaded/Wan2.1-I2V-14B-480P-Diffusers'\n"
                    "[data]\nvideo = 'clip.mp4'\nframes = 49\n[training]\nblocks_to_swap = 32\n")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, str(REPO / "train.py"), "--config", str(toml), "--plan", *args],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)


def test_full_14b_plan_is_fast_small_and_advises_for_24gb(tmp_path):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = _plan(tmp_path, "--gpu-memory", "24GB", "--gpu", "MyCard=100:32")
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    out = proc.stdout
    assert "wan2.1-i2v-14b-480p" in out and "20,280 tokens" in out and "16.39 B frozen" in out
    assert "MyCard" in out and "RTX 4090" in out
    total = float(out.split("total peak per GPU")[1].split("GiB")[0])
    assert 20 < total < 35  # 32 of 40 blocks swapped, checkpointing, float32 LoRA: about 27.5 GiB
    advice = out.split("Fitting 24.0 GiB")[1]
    fitting = [line for line in advice.splitlines() if " fits:" in line]
    assert fitting and "--set training.blocks_to_swap=" in fitting[-1]
    assert float(fitting[-1].split("GiB")[0]) <= 23
    assert usage.ru_maxrss * 1024 < 4 * 2**30  # the largest child's peak RSS
    # The plan itself (the advice composes a dozen more small traces) in under a minute of CPU.
    planned = float(out.split("(planned in ")[1].split(" s")[0])
    assert planned < 60 and cpu < 180, (planned, cpu, wall)


def test_plan_errors_are_one_line(tmp_path):
    proc = _plan(tmp_path, "--variant", "wan9-t2v-1t")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "wan9-t2v-1t" in proc.stderr and "wan2.1-i2v-14b-480p" in proc.stderr
    proc = _plan(tmp_path, "--gpu-memory", "lots")
    assert proc.returncode == 2 and "--gpu-memory 'lots'" in proc.stderr


def test_parsers():
    from engine.plan.gpus import parse_gpu, parse_memory

    assert parse_memory("24GB") == parse_memory("24 GiB") == parse_memory("24") == 24 * 2**30
    assert parse_memory("512MB") == 512 * 2**20
    gpu = parse_gpu("MI300X=1307:192")
    assert (gpu.name, gpu.bf16_tflops, gpu.memory_gib) == ("MI300X", 1307.0, 192.0)
    with pytest.raises(UserError, match="NAME=TFLOPS"):
        parse_gpu("fast")


def test_example_edit_toml_fits_one_24gb_gpu_to_train_and_to_sample():
    """examples/edit.toml says it is for one 24 GB GPU: the planner agrees, for training and for sampling."""
    from config.loader import load_config
    from engine.plan.advice import CONTEXT
    from engine.plan.model import resolve_model
    from engine.plan.report import job_size, plan_training
    from engine.plan.steps import trace_sampling_step

    cfg = load_config(REPO / "examples" / "edit.toml", check_paths=False)
    spec = resolve_model(cfg, None)
    train = plan_training(cfg, spec, composed=True)
    assert train.memory.total + CONTEXT <= 24 * 2**30, train.memory.total / 2**30
    sample = trace_sampling_step(spec, cfg, *job_size(cfg, spec))
    assert sample.peak + CONTEXT <= 24 * 2**30, sample.peak / 2**30
