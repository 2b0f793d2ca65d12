"""Pretrain the toy WanTransformer3DModel as an ordinary I2V model, then write the toy model folder.

    python -m examples.toy.pretrain_transformer [--minutes 30] [--export-only]

Needs $TOY_TRAIN_DIR/vae_final.pt (examples/toy/pretrain_vae.py), or `--init-from MODEL_FOLDER` to continue
pretraining an exported toy model (its VAE, latent statistics and transformer weights are the start; the
checkpoints of the first run are not needed). Steps, each resumable:
1. latent statistics: the VAE's `latents_mean` / `latents_std` are set from the encoded pretraining clips;
2. a staging model folder (diffusers layout) with that VAE and a fresh transformer, so every encoding below
   goes through the project's own adapter (`models.wan.WanAdapter`) exactly as train.py / infer.py do;
3. encode once: target latents, the default I2V condition (first frame kept, the rest empty: the `i2v`
   preset of `datasets.samples.video_sample(mode="naive")`), the packed mask, text and CLIP features;
4. train every transformer weight with the rectified-flow objective of `engine.flow`, keeping an EMA;
5. export: the EMA transformer + the VAE + the frozen tiny encoders to examples/toy/model/.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

from datasets.samples import video_sample
from engine.train.flow import NUM_TRAIN_TIMESTEPS, flow_loss, noisy_latents, sample_time
from examples.toy.toy_model import (
    MODEL_DIR,
    WORK,
    Budget,
    clip_bank,
    folder_size,
    load_checkpoint,
    save_checkpoint,
    to_video,
    vae_from_config,
    write_model_folder,
)
from models.base import Conditioning
from models.wan.adapter import TEXT_LEN, WanAdapter

STAGE_DIR = WORK / "stage_model"
EMA_DECAY = 0.998


def trained_vae():
    state = load_checkpoint(WORK / "vae_final.pt")
    if state is None:
        raise SystemExit(f"{WORK / 'vae_final.pt'} is missing: run python -m examples.toy.pretrain_vae first")
    vae = vae_from_config()
    vae.load_state_dict(state["model"])
    return vae.eval()


@torch.no_grad()
def set_latent_stats(vae, bank: np.ndarray, n: int = 512) -> None:
    """Per-channel mean/std of the posterior mode over n pretraining clips, stored in the VAE config."""
    z = torch.cat([vae.encode(to_video(bank[i:i + 32])).latent_dist.mode() for i in range(0, min(n, len(bank)), 32)])
    mean, std = z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4))
    vae.register_to_config(latents_mean=[round(v, 5) for v in mean.tolist()],
                           latents_std=[round(v, 5) for v in std.tolist()])


@torch.no_grad()
def encode_bank(adapter: WanAdapter, bank: np.ndarray, captions: list[str], batch: int = 32) -> dict:
    """The pretraining set through the adapter: target latents, I2V condition channels, text, image features."""
    x0, cond, image = [], [], []
    no_edit = np.zeros(bank.shape[1:4], dtype=bool)
    for i in range(0, len(bank), batch):
        samples = [video_sample(c, no_edit, "", mode="naive") for c in bank[i:i + batch]]
        x0.append(adapter.encode_video(torch.stack([s.v_target for s in samples])))
        y = adapter.encode_video(torch.stack([s.v_condition for s in samples]))
        packed = adapter.pack_mask(samples[0].m_condition)  # the same for every i2v sample
        cond.append(adapter.condition_channels(packed[None].expand(len(samples), -1, -1, -1, -1), y))
        image.append(adapter.encode_image(torch.stack([s.clip_image for s in samples])))
        if i % 640 == 0:
            print(f"encoded {i + len(samples)}/{len(bank)} clips", flush=True)
    unique = sorted(set(captions))
    texts = torch.cat([adapter.encode_prompt(unique[i:i + 64]) for i in range(0, len(unique), 64)])
    used = int((texts.abs().sum(dim=(0, 2)) > 0).nonzero().max()) + 1  # zero padding beyond: stored trimmed
    index = {c: k for k, c in enumerate(unique)}
    return {"x0": torch.cat(x0), "cond": torch.cat(cond), "image": torch.cat(image),
            "texts": texts[:, :used].clone(), "text_index": torch.tensor([index[c] for c in captions])}


def padded_text(texts: torch.Tensor) -> torch.Tensor:
    """Zero padding to Wan's 512 text tokens, exactly as the pipeline's encode_prompt pads."""
    return torch.nn.functional.pad(texts, (0, 0, 0, TEXT_LEN - texts.shape[1]))


def prepare(bank: np.ndarray, captions: list[str], init_from: Path | None = None) -> dict:
    data_path = WORK / "encoded.pt"
    data = load_checkpoint(data_path)
    if data is not None and (STAGE_DIR / "model_index.json").exists():
        return data
    if init_from is not None:  # continue an exported model: its VAE keeps its statistics (latents stay comparable)
        weights = WanAdapter(init_from, dtype=torch.float32).weights
        write_model_folder(STAGE_DIR, weights.vae(torch.float32), weights.transformer(torch.float32))
    else:
        vae = trained_vae()
        set_latent_stats(vae, bank)
        write_model_folder(STAGE_DIR, vae, None)
    adapter = WanAdapter(STAGE_DIR, dtype=torch.float32)
    t = time.monotonic()
    data = encode_bank(adapter, bank, captions)
    print(f"encoded {len(bank)} clips in {time.monotonic() - t:.0f} s: latents {tuple(data['x0'].shape[1:])}, "
          f"text {tuple(data['texts'].shape)}, image {tuple(data['image'].shape[1:])}", flush=True)
    save_checkpoint(data_path, data)
    return data


def train(data: dict, args: argparse.Namespace) -> torch.nn.Module:
    adapter = WanAdapter(STAGE_DIR, dtype=torch.float32)
    model = adapter.weights.transformer(torch.float32).train().requires_grad_(True)
    adapter.components["transformer"] = model  # adapter.predict runs the model train.py fine-tunes
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ckpt_path = WORK / "transformer.pt"
    state = load_checkpoint(ckpt_path) or {"step": 0, "elapsed": 0.0}
    if "model" in state:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        print(f"resumed transformer at step {state['step']}", flush=True)
    budget = Budget(args.steps, args.minutes, state["step"], state["elapsed"])

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "ema": ema.state_dict(),
                                    "optimizer": opt.state_dict(), "step": budget.step, "elapsed": budget.elapsed})

    n = len(data["x0"])
    last_save, losses = time.monotonic(), []
    while budget.progress < 1.0:
        gen = torch.Generator().manual_seed(budget.step)  # every draw from the step: resume-stable
        idx = torch.randint(0, n, (args.batch,), generator=gen)
        x0 = data["x0"][idx]
        noise = torch.randn(x0.shape, generator=gen)
        s = sample_time(args.batch, "logit_normal", shift=args.shift, generator=gen)
        xs, target = noisy_latents(x0, noise, s)
        c = Conditioning(data["cond"][idx], padded_text(data["texts"][data["text_index"][idx]]), data["image"][idx])
        for g in opt.param_groups:
            g["lr"] = args.lr * budget.lr_scale(warmup=200, decay_from=0.5)
        pred = adapter.predict(adapter.transformer_input(xs, c.cond), s * NUM_TRAIN_TIMESTEPS, c)
        loss = flow_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(EMA_DECAY, (budget.step + 1) / (budget.step + 10))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        budget.step += 1
        losses.append(loss.item())
        if budget.step % 100 == 0:
            print(f"transformer step {budget.step} loss {np.mean(losses):.4f} lr {opt.param_groups[0]['lr']:.2e} "
                  f"{budget.elapsed / 60:.1f} min", flush=True)
            losses = []
        if time.monotonic() - last_save > 120:
            checkpoint()
            last_save = time.monotonic()
    checkpoint()
    print(f"transformer done: {budget.step} steps in {budget.elapsed / 60:.1f} min", flush=True)
    return ema


def export(ema: torch.nn.Module | None, dtype: torch.dtype, out: Path = MODEL_DIR) -> None:
    if ema is None:  # --export-only: the EMA weights of the last checkpoint
        state = load_checkpoint(WORK / "transformer.pt")
        ema = WanAdapter(STAGE_DIR, dtype=torch.float32).weights.transformer(torch.float32)
        ema.load_state_dict(state["ema"])
    vae = WanAdapter(STAGE_DIR, dtype=torch.float32).weights.vae(torch.float32)  # the VAE with its statistics
    write_model_folder(out, vae, ema.requires_grad_(False), dtype=dtype)
    print(f"wrote {out} ({folder_size(out) / 2**20:.1f} MiB)", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shift", type=float, default=1.0,
                    help="shift of the logit-normal flow times (t' = shift*t / (1 + (shift-1)*t)); above 1 trains the "
                         "high-noise times, where a clip's layout and motion are decided, more often")
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="exported transformer dtype")
    ap.add_argument("--out", type=Path, default=MODEL_DIR, help="model folder to write (default: the committed one)")
    ap.add_argument("--export-only", action="store_true", help="write the model from the last checkpoint and stop")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="an exported toy model folder to continue pretraining from (instead of vae_final.pt "
                         "and a fresh transformer); used only when $TOY_TRAIN_DIR has no staging model yet")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if args.export_only:
        export(None, dtype, args.out)
        return 0
    bank, captions = clip_bank()
    data = prepare(bank, captions, args.init_from)
    export(train(data, args), dtype, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
