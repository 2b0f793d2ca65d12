"""The toy Wan2.1-I2V model's architecture, its pretraining data and the shared pretraining helpers.

Architecture (see MODEL_CARD.md): a small `AutoencoderKLWan` with spatial compression 4 (32 px -> 8x8
latents) and the usual temporal compression 4, z_dim 16 so the transformer keeps Wan2.1-I2V's 36 input
channels (16 noisy + 4 mask + 16 condition latents: `models.wan_loading` checks for exactly that), a small
`WanTransformer3DModel`, and the tiny random umT5 text encoder and CLIP vision tower of
`tools.make_tiny_model` (frozen, never trained: the transformer learns to read them).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from examples.toy import world

WORK = Path(os.environ.get("TOY_TRAIN_DIR", "runs/toy-train"))  # checkpoints, caches, logs (not committed)
MODEL_DIR = Path(__file__).resolve().parent / "model"  # the committed result (diffusers layout)
# Pretraining clips: world seeds 0 .. TRAIN_CLIPS-1 (held-out clips start at world.HELDOUT_SEED0 = 1,000,000).
TRAIN_CLIPS = int(os.environ.get("TOY_TRAIN_CLIPS", "10000"))

Z_DIM = 16
VAE_CONFIG: dict[str, Any] = dict(
    base_dim=24, z_dim=Z_DIM, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
    temperal_downsample=[True, True], scale_factor_temporal=4, scale_factor_spatial=4,
    latents_mean=[0.0] * Z_DIM, latents_std=[1.0] * Z_DIM,  # replaced by the encoded data's statistics
)
# Patch 1x1 in space: with the VAE's 4x compression a token covers 4x4 pixels of the 32x32 frame (8x8 tokens per
# latent frame). With the real model's 1x2x2 patch a token would cover 8x8 pixels and a shape only 2x2 tokens.
TRANSFORMER_SIZES: dict[str, Any] = dict(
    patch_size=(1, 1, 1), num_attention_heads=6, attention_head_dim=32, freq_dim=64, ffn_dim=576, num_layers=4,
)
# A narrower CLIP vision tower than tools.make_tiny_model's default keeps the committed folder under 10 MB.
CLIP_SIZES: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)


def vae_from_config() -> AutoencoderKLWan:
    return AutoencoderKLWan(**VAE_CONFIG)


# ------------------------------------------------------------------------------------------ data


def clip_bank(n: int = TRAIN_CLIPS) -> tuple[np.ndarray, list[str]]:
    """uint8 [n, T, H, W, 3] pretraining clips of world seeds 0..n-1 and their captions (cached in WORK)."""
    frames_path, captions_path = WORK / f"clips_{n}.npy", WORK / f"captions_{n}.json"
    if frames_path.exists() and captions_path.exists():
        return np.load(frames_path), json.loads(captions_path.read_text())
    clips, captions = [], []
    for seed in range(n):
        p = world.sample_params(seed)
        clips.append(world.render(p)[0])
        captions.append(world.caption(p))
    bank = np.stack(clips)
    WORK.mkdir(parents=True, exist_ok=True)
    atomic_save(lambda tmp: np.save(tmp, bank), frames_path, suffix=".npy")
    atomic_save(lambda tmp: Path(tmp).write_text(json.dumps(captions)), captions_path)
    return bank, captions


def to_video(clips: np.ndarray) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float [B, 3, T, H, W] in [-1, 1] (the sample builder's scaling)."""
    return torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two [-1, 1] tensors on the 0..255 scale."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) * 127.5).pow(2).mean().item()
    return 10 * math.log10(255**2 / max(mse, 1e-10))


# ------------------------------------------------------------------------------------------ checkpoints


def atomic_save(write, path: Path, suffix: str = "") -> None:
    """Write through a temp name in the same folder, then rename (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    atomic_save(lambda tmp: torch.save(dict(state), tmp), path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


class Budget:
    """Progress of a phase in [0, 1]: the larger of steps done and wall time used (both resumable)."""

    def __init__(self, steps: int, minutes: float, step: int = 0, elapsed: float = 0.0) -> None:
        self.steps, self.seconds, self.step = steps, minutes * 60, step
        self._start = time.monotonic() - elapsed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    @property
    def progress(self) -> float:
        return min(1.0, max(self.step / self.steps, self.elapsed / self.seconds))

    def lr_scale(self, warmup: int = 50, decay_from: float = 0.6) -> float:
        """Linear warmup, flat, then linear decay to 10% over the last part of the budget."""
        warm = min(1.0, (self.step + 1) / warmup)
        p = self.progress
        return warm * (1.0 if p < decay_from else 1.0 - 0.9 * (p - decay_from) / (1 - decay_from))


# ------------------------------------------------------------------------------------------ the model folder


def write_model_folder(out: Path, vae: AutoencoderKLWan, transformer: WanTransformer3DModel | None,
                       dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """Write a complete diffusers-layout Wan2.1-I2V folder: this VAE, this transformer (a fresh one from
    TRANSFORMER_SIZES when None) and the tiny random text encoder, CLIP and tokenizer of tools.make_tiny_model.
    Atomic: written beside `out`, then renamed over it."""
    from models.wan import tiny

    sizes = tiny.resolve_sizes({"transformer": TRANSFORMER_SIZES, "clip": CLIP_SIZES})
    if transformer is None:
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**sizes["transformer"])  # diffusers' own init, trained from here
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory() as work:
            parts = tiny.TinyWan(seed, Path(work), sizes)
        parts.vae, parts.transformer = vae, transformer
        tiny._write_diffusers(parts, tmp / "model", dtype)
        for cfg in (tmp / "model").glob("*/config.json"):  # no machine-local paths in a committed folder
            data = json.loads(cfg.read_text())
            if data.pop("_name_or_path", None) is not None:
                cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        (tmp / "model").chmod(0o755)
        if out.exists():
            out.rename(tmp / "old")
        (tmp / "model").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
