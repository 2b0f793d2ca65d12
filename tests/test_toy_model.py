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
    assert folder_size(MODEL) < 16 * 2**20  # the limit for committed example weights


def test_toy_model_loads_through_the_adapter_and_reconstructs_held_out_clips():
    cfg = load_config(REPO / "examples" / "toy.toml")
    adapter = make_adapter(cfg.model, "cpu")
    assert (adapter.temporal_compression, adapter.spatial_compression) == (4, 4)  # read from the VAE config
    assert adapter.base_model_name() == "wan2.1-i2v-custom-192"
    case = world.edit_case(world.HELDOUT_SEED0 + 2)
    video = to_tensor(case.edited)[None]
    latents = adapter.encode_video(video)
    assert latents.shape == (1, 16, 3, 8, 8)
    assert abs(float(latents.mean())) < 0.5 and 0.5 < float(latents.std()) < 2.0  # latents_mean/std fit the data
    recon = adapter.decode_latents(latents)
    mse = float(((recon - video) * 127.5).pow(2).mean())
    assert 10 * np.log10(255**2 / mse) > 20.0  # a trained VAE (about 22 dB), not a random one (about 11 dB)
    packed = adapter.pack_mask(torch.ones(1, 9, 32, 32))
    assert packed.shape == (4, 3, 8, 8)
    text = adapter.encode_prompt([case.caption])
    assert text.shape == (1, 512, 24)


def test_short_ablation_run_writes_the_table_and_grid(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "-m", "benchmarks.toy_ablation", "--seeds", "1000000:1000001", "--runs", "1",
           "--edits", "shape", "--variants", "a,c_ff", "--steps", "2", "--reference-steps", "2",
           "--infer-steps", "2", "--out", str(out), "--work", str(work)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert set(report["summary"]) == {"a", "c_ff"}
    assert [(r["clip"], r["seed"], r["edit"]) for r in report["rows"] if r["variant"] == "a"] == [(1000000, 0, "shape")]
    for name, stats in report["summary"].items():
        assert stats["n"] == 1, name
        assert 0 < stats["kept_psnr"] < 100 and -1 <= stats["kept_ssim"] <= 1 and stats["color_error"] >= 0
        assert 0 < stats["whole_psnr"] < 100
    assert len(report["baseline_rows"]) == 1 and report["vae_reconstruction_psnr"] > 20.0
    table = (out / "table.md").read_text()
    assert "| c + edited first frame sample |" in table and "repeat the first frame" in table
    assert "| variant | shape |" in table  # the per-kind table
    assert (out / "grid_shape.png").stat().st_size > 1000
    # Only the LoRA variant trained (a is the base model); the first-frame sample is a second stage.
    loras = sorted(p.parent.parent.name for p in (work / "runs").glob("*/*/lora.safetensors"))
    assert loras == ["clip1000000-c_ff-s0"] * len(loras) and 1 <= len(loras) <= 2
    # A rerun finds every run done and only writes the report.
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)})
    assert again.returncode == 0 and "[1/" not in again.stdout


def test_prior_benchmark_scores_the_base_model_against_its_baselines(tmp_path):
    """benchmarks/toy_prior.py on one held-out clip: per-frame PSNR of the VAE, the prediction (true and reversed
    caption) and repeating frame 0, motion followed and flow losses, in prior.json and the printed table."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmarks.toy_prior", "--seeds", "1000000:1000001", "--infer-steps", "2",
           "--loss-clips", "2", "--threads", "1", "--out", str(out), "--work", str(tmp_path / "work")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (name, r), = json.loads((out / "prior.json").read_text())["results"].items()
    assert name.endswith("model") and "| model | motion followed" in proc.stdout
    per = r["per_frame_psnr"]
    assert set(per) == {"vae", "prediction", "reversed caption", "repeat first"}
    assert all(len(v) == 8 for v in per.values())  # frames 1..8
    # the VAE's round trip is the ceiling, well above repeating frame 0 on a moving clip
    assert r["future_psnr"]["vae"] > r["future_psnr"]["repeat first"] + 3
    assert all(len(v) == 3 and all(0 < x < 2 for x in v) for v in r["flow_loss"].values())
    assert [len(v) for v in r["future_psnr_per_clip"].values()] == [1] * 4
    assert "prediction - repeat first" in proc.stdout and "better in" in proc.stdout


def test_toy_toml_ships_the_settings_the_ablation_measures_as_the_recolor_remedy():
    """The README's toy table reports examples/toy.toml's settings through the rows of toy_ablation.RECOLOR."""
    from benchmarks import toy_ablation

    shipped = load_config(REPO / "examples" / "toy.toml", check_paths=False)
    measured = load_config(REPO / "examples" / "toy.toml", toy_ablation.BY_NAME[toy_ablation.RECOLOR].train,
                           check_paths=False)
    assert shipped.training == measured.training and shipped.data == measured.data
    assert shipped.adapter == measured.adapter and shipped.optimizer == measured.optimizer
    assert shipped.training.appearance_augment > 0 and shipped.training.first_frame_reference  # the remedy
