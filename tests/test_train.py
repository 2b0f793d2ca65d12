"""train.py on tiny fixtures: single process, data parallel, pipeline parallel, stages, resume, pre-flight."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from synthetic import moving_square
from train_runs import DEEPSPEED, REPO, run_folder, run_train

import media
from config.loader import load_config


def render(t: int, w: int = 64, h: int = 48) -> tuple[np.ndarray, np.ndarray]:
    return moving_square(t, w, h, top=12, side=16, x0=4, step=2)


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_wan_diffusers) -> Path:
    """A job folder: 9 frames of 64x48 at 16 fps, a mask folder, one edited later frame."""
    root = tmp_path_factory.mktemp("train-job")
    frames, masks = render(20)
    media.write_video(root / "src.mp4", frames, 16)
    (root / "masks").mkdir()
    for i, m in enumerate(masks):
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"{i}.png")
    (root / "ref").mkdir()
    edited = frames[4].copy()
    edited[masks[4]] = (40, 40, 250)
    Image.fromarray(edited).save(root / "ref" / "4.png")
    (root / "edit.toml").write_text(
        f"name = 'tiny'\n[model]\nckpt_path = '{tiny_wan_diffusers}'\ndtype = 'float32'\n"
        "[data]\nvideo = 'src.mp4'\nmask = 'masks'\ncaption = 'a yellow box'\nframes = 9\nwidth = 64\nheight = 48\n"
        "[adapter]\nrank = 4\n[training]\nsteps = 4\nreference_steps = 0\nsave_every_n_steps = 0\n"
        "checkpoint_every_n_minutes = 0\n[optimizer]\nlr = 1e-3\n"
    )
    return root


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_single_process_run_writes_a_loadable_lora(job, tmp_path, tiny_wan_diffusers):
    proc = run_train(job, out=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_folder(tmp_path)
    lora = run / "lora.safetensors"
    assert f"LoRA: {lora}" in proc.stdout and "trained 4 steps" in proc.stdout
    assert (run / "config.toml").exists() and any((run / "tensorboard").iterdir())
    assert [m["step"] for m in metrics(run)] == [1, 2, 3, 4]
    keys = load_file(lora).keys()
    assert keys and all(k.startswith("diffusion_model.blocks.") for k in keys)
    assert load_config(run / "config.toml", check_paths=False).adapter.rank == 4

    from diffusers import WanImageToVideoPipeline
    from diffusers.utils import logging as dlog

    pipe = WanImageToVideoPipeline.from_pretrained(tiny_wan_diffusers)
    dlog.set_verbosity_warning()
    with _no_diffusers_warnings():
        pipe.load_lora_weights(str(lora))
    loaded = [n for n, _ in pipe.transformer.named_parameters() if "lora_A" in n]
    # diffusers adds zero adapters for the image k/v projections a file leaves out; all others come from the file
    image_kv = [n for n in loaded if "add_k_proj" in n or "add_v_proj" in n]
    assert len(loaded) - len(image_kv) == sum(1 for k in keys if "lora_A" in k)


class _no_diffusers_warnings:
    """Capture diffusers' logger: loading must not warn about unexpected or missing keys."""

    def __enter__(self):
        import logging

        self.records = []
        self.handler = logging.Handler()
        self.handler.emit = self.records.append
        self.logger = logging.getLogger("diffusers")
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        bad = [r.getMessage() for r in self.records if r.levelname in ("WARNING", "ERROR")]
        assert not bad, bad


@pytest.mark.skipif(DEEPSPEED is None, reason="deepspeed launcher not installed")
@pytest.mark.parametrize("overrides", [(), ("data.frames=17", "data.window=9", "training.low_cost=true",
                                            "training.clip_frames=5")], ids=["window", "long-low-cost"])
def test_data_parallel_ranks_end_identical(job, tmp_path, overrides):
    """Also a long job (17 frames, window 9) in low-cost mode: each rank draws its own short clips from the whole
    clip, and the replicas still end identical."""
    proc = run_train(job, *overrides, launcher="deepspeed", out=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_folder(tmp_path) / "summary.json").read_text())
    sums = summary["lora_checksum_per_rank"]
    assert summary["world_size"] == 2 and len(sums) == 2 and sums[0] == sums[1] and sums[0] != 0


@pytest.mark.skipif(DEEPSPEED is None, reason="deepspeed launcher not installed")
def test_two_stage_pipeline_matches_single_stage(job, tmp_path):
    one = run_train(job, out=str(tmp_path / "one"))
    two = run_train(job, "training.pipeline_stages=2", launcher="deepspeed", out=str(tmp_path / "two"))
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    a = [m["loss"] for m in metrics(run_folder(tmp_path / "one"))]
    b = [m["loss"] for m in metrics(run_folder(tmp_path / "two"))]
    # Same seed and data: the only difference is float summation order across the stage boundary.
    np.testing.assert_allclose(a, b, rtol=2e-3)
    la = load_file(run_folder(tmp_path / "one") / "lora.safetensors")
    lb = load_file(run_folder(tmp_path / "two") / "lora.safetensors")
    assert la.keys() == lb.keys()
    for k in la:
        torch.testing.assert_close(la[k].float(), lb[k].float(), atol=2e-3, rtol=2e-2)


def test_stage_two_continues_on_reference_samples(job, tmp_path):
    proc = run_train(job, "training.steps=2", "training.reference_steps=3", "training.reference_ratio=1.0",
                     f"data.reference_frames='{job / 'ref'}'", out=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_folder(tmp_path)
    assert [m["stage"] for m in metrics(run)] == ["stage1"] * 2 + ["stage2"] * 3
    stage1, final = load_file(run / "lora_stage1.safetensors"), load_file(run / "lora.safetensors")
    assert stage1.keys() == final.keys() and any(not torch.equal(stage1[k], final[k]) for k in final)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stages"][1]["mix"] == {"reference": 1.0, "video": 0.0}


def test_sigterm_then_resume_equals_uninterrupted(job, tmp_path):
    # Enough steps that the SIGTERM (sent once 3 are logged) lands mid-training even at ~40 steps/s
    steps = 60
    common = (f"training.steps={steps}", "training.checkpoint_every_n_steps=0")
    full = run_train(job, *common, out=str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]

    out = tmp_path / "cut"
    args = [sys.executable, "train.py", "--config", str(job / "edit.toml"), "--set", f"output_dir='{out}'"]
    for o in common:
        args += ["--set", o]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DS_ACCELERATOR": "cpu"})
    deadline = time.time() + 300
    while time.time() < deadline:
        runs = list((out / "tiny").glob("*/metrics.jsonl")) if (out / "tiny").exists() else []
        if runs and len(runs[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "interrupted at step" in stdout and "--resume" in stdout
    run = run_folder(out)
    assert not (run / "lora.safetensors").exists()
    resumed = run_train(job, *common, out=str(out), extra=("--resume",))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [m["step"] for m in metrics(run)] == list(range(1, steps + 1))
    a = load_file(run_folder(tmp_path / "full") / "lora.safetensors")
    b = load_file(run / "lora.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("model.ckpt_path=''",), "required key(s) not set: model.ckpt_path"),
        (("training.steps=0",), "nothing to train"),
        (("optimizer.type='adamw8bit'",), "needs bitsandbytes"),
        (("training.pipeline_stages=2",), "does not divide the 1 processes"),
        (("data.video='missing.mp4'",), "data.video = "),
        (("data.frames=41",), "too short for the window"),
    ],
)
def test_preflight_failures_are_one_line(job, tmp_path, overrides, message):
    if "adamw8bit" in overrides[0] and importlib.util.find_spec("bitsandbytes"):
        pytest.skip("bitsandbytes is installed: the missing-package message cannot show")
    proc = run_train(job, *overrides, out=str(tmp_path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "tiny").exists() or not any((tmp_path / "tiny").glob("*/lora.safetensors"))


def test_in_process_only_lora_changes_and_fixed_batch_loss_drops(job, tmp_path):
    from datasets.job import load_job
    from engine.train import distributed as dist_utils
    from engine.train.batches import BatchStream, TimeSampling
    from engine.train.flow import flow_loss
    from engine.train.job import encode_job, plan_stages
    from engine.train.run_dir import RunDir
    from engine.train.trainer import Trainer
    from models.base import Conditioning
    from models.lora import add_lora
    from models.registry import make_adapter

    cfg = load_config(job / "edit.toml", [f"output_dir='{tmp_path}'", "training.steps=8", "optimizer.lr=2e-3"])
    dist = dist_utils.setup()
    adapter = make_adapter(cfg.model, dist.device)
    encoded = encode_job(cfg, adapter, load_job(cfg, edited=False), dist)
    transformer = adapter.load_transformer()
    add_lora(transformer, adapter.lora_target_modules(), 4, 4.0, 0.0, "float32")
    before = {n: p.detach().clone() for n, p in transformer.named_parameters()}
    trainable = {n for n, p in transformer.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)

    def fixed_loss() -> float:
        inputs, (target, weight) = next(BatchStream(adapter, {"video": encoded["video"]}, {"video": 1.0}, 1, 123, 0,
                                                    TimeSampling(min_t=0.3, max_t=0.7)).at(0))
        with torch.no_grad():
            x, t, text, image = inputs
            pred = adapter.predict(x, t, Conditioning(None, text, image if image.numel() else None))
        return float(flow_loss(pred, target, weight))

    loss0 = fixed_loss()
    saved = {}
    trainer = Trainer(cfg, dist, adapter, transformer, plan_stages(cfg, encoded), RunDir.new(tmp_path, "tiny"),
                      lambda path, state: saved.setdefault(path.name, state))
    result = trainer.run()
    assert result.steps == 8 and "lora.safetensors" in saved
    for n, p in transformer.named_parameters():
        if n in trainable:
            continue
        assert torch.equal(p.detach(), before[n]), f"frozen weight {n} changed"
    assert any(not torch.equal(p.detach(), before[n]) for n, p in transformer.named_parameters() if n in trainable)
    assert fixed_loss() < loss0


def test_block_swap_and_no_checkpointing_train_the_same(job, tmp_path):
    base = run_train(job, out=str(tmp_path / "base"))
    swap = run_train(job, "training.blocks_to_swap=1", out=str(tmp_path / "swap"))
    plain = run_train(job, "training.activation_checkpointing=false", out=str(tmp_path / "plain"))
    for p in (base, swap, plain):
        assert p.returncode == 0, p.stderr[-3000:]
    ref = [m["loss"] for m in metrics(run_folder(tmp_path / "base"))]
    for other in ("swap", "plain"):
        np.testing.assert_allclose([m["loss"] for m in metrics(run_folder(tmp_path / other))], ref, rtol=1e-5)
    too_many = run_train(job, "training.blocks_to_swap=5", out=str(tmp_path / "bad"))
    assert too_many.returncode == 2 and "training.blocks_to_swap = 5" in too_many.stderr
