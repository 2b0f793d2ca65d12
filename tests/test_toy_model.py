"""The committed toy model (examples/toy/model) through the normal adapter path, and a short ablation run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from config.loader import load_config
from datasets.samples import to_tensor
from examples.toy import world
from examples.toy.toy_model import folder_size
from models.registry import make_adapter

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "examples" / "toy" / "model"


def test_toy_model_is_small_and_in_the_diffusers_layout():
    index = json.loads((MODEL / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline"
    for sub in ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor", "scheduler"):
        assert (MODEL / sub).is_dir(), sub
    assert folder_size(MODEL) < 10 * 2**20


def test_toy_model_loads_through_the_adapter_and_reconstructs_held_out_clips():
    cfg = load_config(REPO / "examples" / "toy.toml")
    adapter = make_adapter(cfg.model, "cpu")
    assert (adapter.temporal_compression, adapter.spatial_compression) == (4, 4)  # read from the VAE config
    assert adapter.base_model_name() == "wan2.1-i2v-custom-128"
    case = world.edit_case(world.HELDOUT_SEED0 + 2)
    video = to_tensor(case.edited)[None]
    latents = adapter.encode_video(video)
    assert latents.shape == (1, 16, 3, 8, 8)
    assert abs(float(latents.mean())) < 0.5 and 0.5 < float(latents.std()) < 2.0  # latents_mean/std fit the data
    recon = adapter.decode_latents(latents)
    mse = float(((recon - video) * 127.5).pow(2).mean())
    assert 10 * np.log10(255**2 / mse) > 22.0  # a trained VAE (about 24 dB), not a random one (about 11 dB)
    packed = adapter.pack_mask(torch.ones(1, 9, 32, 32))
    assert packed.shape == (4, 3, 8, 8)
    text = adapter.encode_prompt([case.caption])
    assert text.shape == (1, 512, 24)


def test_short_ablation_run_writes_the_table_and_grid(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "-m", "benchmarks.toy_ablation", "--clips", "2", "--seeds", "1", "--steps", "2",
           "--reference-steps", "2", "--infer-steps", "2", "--out", str(out), "--work", str(work)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert set(report["summary"]) == {"a", "a2", "b", "c", "d", "e"}
    for name, stats in report["summary"].items():
        assert stats["n"] == 2, name
        assert 0 < stats["kept_psnr"] < 100 and -1 <= stats["kept_ssim"] <= 1 and stats["color_error"] >= 0
    assert len(report["baseline_rows"]) == 2 and report["vae_reconstruction_psnr"] > 22.0
    table = (out / "table.md").read_text()
    assert "| c: mask-aware LoRA |" in table and "repeat the first frame" in table
    assert (out / "grid.png").stat().st_size > 1000
    # Every variant trained its own LoRA (a and a' train none): b, c, d (two stages), e per clip.
    loras = sorted(p.parent.parent.name for p in (work / "runs").glob("*/*/lora.safetensors"))
    assert len(loras) == 8 and sum(n.endswith("-d-s0") for n in loras) == 2
