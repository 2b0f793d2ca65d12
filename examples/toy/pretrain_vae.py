"""Pretrain the toy Wan VAE for reconstruction: single frames first (cheap), then whole 9-frame clips.

    python -m examples.toy.pretrain_vae [--frames-minutes 15 --clips-minutes 60]

Resumable: the state (weights, optimizer, phase, step, time used) is saved to $TOY_TRAIN_DIR/vae.pt every
minute and at the end of each phase; re-running continues where it stopped. The finished VAE is
$TOY_TRAIN_DIR/vae_final.pt. Loss: MSE + L1 on the reconstruction of a posterior sample, plus a small
KL term that keeps the latents bounded (the transformer later models them).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from examples.toy.toy_model import (
    WORK,
    Budget,
    clip_bank,
    load_checkpoint,
    psnr,
    save_checkpoint,
    to_video,
    vae_from_config,
)

KL_WEIGHT = 1e-4
PHASES = ("frames", "clips")


def kl_term(dist) -> torch.Tensor:
    return 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()


def batch(bank: np.ndarray, phase: str, rng: np.random.Generator, frames_batch: int, clips_batch: int) -> torch.Tensor:
    if phase == "frames":  # random single frames: the VAE's first-frame path, all spatial layers
        idx, t = rng.integers(0, len(bank), frames_batch), rng.integers(0, bank.shape[1], frames_batch)
        return to_video(bank[idx, t][:, None])
    return to_video(bank[rng.integers(0, len(bank), clips_batch)])


@torch.no_grad()
def evaluate(vae, bank: np.ndarray) -> float:
    """Reconstruction PSNR (posterior mode) on the last 32 pretraining clips, whole clips."""
    x = to_video(bank[-32:])
    recon = torch.cat([vae.decode(vae.encode(x[i:i + 8]).latent_dist.mode()).sample for i in range(0, 32, 8)])
    return psnr(recon, x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames-steps", type=int, default=20000)
    ap.add_argument("--frames-minutes", type=float, default=15.0)
    ap.add_argument("--clips-steps", type=int, default=20000)
    ap.add_argument("--clips-minutes", type=float, default=60.0)
    ap.add_argument("--frames-batch", type=int, default=16)
    ap.add_argument("--clips-batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    bank, _ = clip_bank()
    ckpt_path, final_path = WORK / "vae.pt", WORK / "vae_final.pt"
    vae = vae_from_config()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    state = load_checkpoint(ckpt_path) or {"phase": 0, "step": 0, "elapsed": 0.0}
    if "model" in state:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        print(f"resumed: phase {PHASES[state['phase']]} step {state['step']}", flush=True)

    def checkpoint(phase: int, budget: Budget) -> None:
        save_checkpoint(ckpt_path, {"model": vae.state_dict(), "optimizer": opt.state_dict(), "phase": phase,
                                    "step": budget.step, "elapsed": budget.elapsed})

    limits = {"frames": (args.frames_steps, args.frames_minutes), "clips": (args.clips_steps, args.clips_minutes)}
    for phase_i in range(state["phase"], len(PHASES)):
        phase = PHASES[phase_i]
        resumed = phase_i == state["phase"]
        budget = Budget(*limits[phase], step=state["step"] if resumed else 0,
                        elapsed=state["elapsed"] if resumed else 0.0)
        rng = np.random.default_rng([phase_i, budget.step])  # resumed runs draw fresh, reproducible batches
        last_save, losses = time.monotonic(), []
        vae.train()
        while budget.progress < 1.0:
            for g in opt.param_groups:
                g["lr"] = args.lr * budget.lr_scale() * (1.0 if phase == "frames" else 0.5)
            x = batch(bank, phase, rng, args.frames_batch, args.clips_batch)
            dist = vae.encode(x).latent_dist
            recon = vae.decode(dist.sample()).sample
            loss = (recon - x).pow(2).mean() + (recon - x).abs().mean() + KL_WEIGHT * kl_term(dist)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            budget.step += 1
            losses.append(loss.item())
            if budget.step % 100 == 0:
                print(f"vae {phase} step {budget.step} loss {np.mean(losses):.4f} "
                      f"{budget.elapsed / 60:.1f} min", flush=True)
                losses = []
            if time.monotonic() - last_save > 60:
                checkpoint(phase_i, budget)
                last_save = time.monotonic()
        vae.eval()
        print(f"vae {phase} done: {budget.step} steps, {budget.elapsed / 60:.1f} min, "
              f"clip reconstruction PSNR {evaluate(vae, bank):.2f} dB", flush=True)
        state = {"phase": phase_i + 1, "step": 0, "elapsed": 0.0}
        save_checkpoint(ckpt_path, {"model": vae.state_dict(), "optimizer": opt.state_dict(), **state})
    save_checkpoint(final_path, {"model": vae.state_dict(), "psnr": evaluate(vae, bank)})
    print(f"vae saved: {final_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
