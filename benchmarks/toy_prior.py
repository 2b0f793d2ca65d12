"""What limits the toy base model as an image-to-video prior, measured on held-out clips.

    python -m benchmarks.toy_prior [--models examples/toy/model OTHER_MODEL ...] [--seeds 1000000:1000012]

Per model, predicting each held-out source clip from its own first frame and caption (no LoRA, the
ablation's sampler settings, sampling seed 0):
- per-frame PSNR of the VAE's reconstruction (the ceiling), of the prediction, of the prediction with the
  caption's motion words reversed (left <-> right, up <-> down, grows <-> shrinks, clockwise <->
  counterclockwise), and of repeating the first frame;
- motion followed: the first shape's displacement from the first to the last frame in the prediction,
  projected on its true displacement, as a fraction of it (1: moves as the clip does, 0: stays, -1:
  reversed), with the true and the reversed caption. Equal values mean the caption's motion is not read;
- flow loss at times 0.2 / 0.5 / 0.8 (fixed noise) on --loss-clips pretraining clips (world seeds 0..N-1) and
  as many held-out clips (from 1,000,000): a gap means the model overfits its pretraining set, no gap that it underfits.
Writes DIR/prior.json (--out) and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks import toy_ablation as ablation
from benchmarks import toy_metrics
from config.atomic import write_atomic
from engine.evaluate import metrics
from examples.toy import world

REPO = Path(__file__).resolve().parents[1]
REVERSED = {"left": "right", "right": "left", "up": "down", "down": "up", "grows": "shrinks", "shrinks": "grows",
            "clockwise": "counterclockwise", "counterclockwise": "clockwise"}
TIMES = (0.2, 0.5, 0.8)


def reverse_motion(caption: str) -> str:
    return re.sub(r"\b(" + "|".join(REVERSED) + r")\b", lambda m: REVERSED[m.group(1)], caption)


def first_shape_path(frames: np.ndarray, params: world.ClipParams) -> np.ndarray | None:
    """Displacement (x, y) in pixels of the first shape from the first to the last frame, from the pixels that
    differ from the clip without it (color-blind; other shapes' pixels at either end left out), or None when
    it is not found."""
    without, others = world.render(dataclasses.replace(params, shapes=params.shapes[1:]))
    others = others.any(axis=0) if len(others) else np.zeros(frames.shape[:3], dtype=bool)
    hidden = others[0] | others[-1]  # the same pixels left out at both ends: a still shape has not moved
    ends = [toy_metrics.shape_centroid(frames[t], without[t], hidden) for t in (0, len(frames) - 1)]
    return None if any(e is None for e in ends) else ends[1] - ends[0]


def predict(model: Path, case: world.EditCase, caption: str, work: Path, infer_steps: int) -> np.ndarray:
    job = ablation.case_job(case, work)
    args = argparse.Namespace(steps=1, steps_given=False, reference_steps=None, infer_steps=infer_steps)
    cfg = ablation.job_config(job, work, model, 0, ablation.BY_NAME["a"], args,
                              f"data.edited_frame='{job / 'source' / '00000.png'}'",
                              f"data.caption={json.dumps(caption)}", f"data.edited_caption={json.dumps(caption)}")
    return ablation.generate_frames(cfg, None)


@torch.no_grad()
def flow_losses(model: Path, seeds: list[int]) -> list[float]:
    """Mean flow loss at each of TIMES over the clips of `seeds`, with noise fixed by the clip count."""
    from engine.train.flow import NUM_TRAIN_TIMESTEPS, flow_loss, noisy_latents
    from examples.toy.pretrain_transformer import encode_bank, padded_text
    from models.base import Conditioning
    from models.wan.adapter import WanAdapter

    adapter = WanAdapter(model, dtype=torch.float32)
    params = [world.sample_params(s) for s in seeds]
    data = encode_bank(adapter, np.stack([world.render(p)[0] for p in params]), [world.caption(p) for p in params])
    text = padded_text(data["texts"][data["text_index"]])
    noise = torch.randn(data["x0"].shape, generator=torch.Generator().manual_seed(0))
    out = []
    for t in TIMES:
        s = torch.full((len(seeds),), t)
        xs, target = noisy_latents(data["x0"], noise, s)
        losses = []
        for i in range(0, len(seeds), 16):
            c = Conditioning(data["cond"][i:i + 16], text[i:i + 16], data["image"][i:i + 16])
            x = adapter.transformer_input(xs[i:i + 16], c.cond)
            pred = adapter.predict(x, s[i:i + 16] * NUM_TRAIN_TIMESTEPS, c)
            losses.append(float(flow_loss(pred, target[i:i + 16])) * len(c.cond))
        out.append(sum(losses) / len(seeds))
    return out


def measure(model: Path, seeds: list[int], args: argparse.Namespace, work: Path) -> dict:
    rows = {"vae": [], "prediction": [], "reversed caption": [], "repeat first": []}
    future = {k: [] for k in rows}  # per clip: PSNR of the MSE over frames 1..T-1, as the ablation scores
    follow = {"prediction": [], "reversed caption": []}
    cases = [world.edit_case(seed, world.EDIT_KINDS[i % len(world.EDIT_KINDS)]) for i, seed in enumerate(seeds)]
    recon = ablation.vae_frames(model, [c.source for c in cases])  # the VAE loaded once, clips in batches
    for i, (seed, case) in enumerate(zip(seeds, cases)):
        frames = {"vae": recon[i],
                  "prediction": predict(model, case, case.caption, work, args.infer_steps),
                  "reversed caption": predict(model, case, reverse_motion(case.caption), work, args.infer_steps),
                  "repeat first": np.repeat(case.source[:1], len(case.source), 0)}
        for name, x in frames.items():
            rows[name].append([metrics.psnr_from_mse(metrics.mse(x[t], case.source[t])) for t in range(1, len(x))])
            future[name].append(toy_metrics.future_psnr(x, case.source))
        true = first_shape_path(case.source, case.params)
        if true is not None and np.linalg.norm(true) >= 2.0:
            for name in follow:
                moved = first_shape_path(frames[name], case.params)
                follow[name].append(0.0 if moved is None else float(moved @ true / (true @ true)))
        print(f"[{i + 1}/{len(seeds)}] {model.name} clip {seed}", flush=True)
    return {"per_frame_psnr": {k: np.mean(v, axis=0).tolist() for k, v in rows.items()},
            "future_psnr": {k: float(np.mean(v)) for k, v in future.items()},
            "future_psnr_per_clip": {k: [float(x) for x in v] for k, v in future.items()},
            "motion_followed": {k: [float(np.mean(v)), len(v)] for k, v in follow.items()},
            "flow_loss": {"pretraining": flow_losses(model, list(range(args.loss_clips))),
                          "held-out": flow_losses(model, list(range(world.HELDOUT_SEED0,
                                                                    world.HELDOUT_SEED0 + args.loss_clips)))}}


def render(results: dict[str, dict]) -> str:
    lines = ["| model | frames 1..8: PSNR dB | mean |", "|---|---|---|"]
    for model, r in results.items():
        for name, per in r["per_frame_psnr"].items():
            lines.append(f"| {model}: {name} | {' '.join(f'{v:.1f}' for v in per)} | {r['future_psnr'][name]:.2f} |")
    lines += ["", "| model | motion followed (true caption) | (reversed caption) | flow loss t=0.2/0.5/0.8, "
              "pretraining clips | held-out clips |", "|---|---|---|---|---|"]
    for model, r in results.items():
        m, loss = r["motion_followed"], r["flow_loss"]
        lines.append(f"| {model} | {m['prediction'][0]:+.2f} (n={m['prediction'][1]}) | "
                     f"{m['reversed caption'][0]:+.2f} | {' / '.join(f'{v:.4f}' for v in loss['pretraining'])} | "
                     f"{' / '.join(f'{v:.4f}' for v in loss['held-out'])} |")
    lines += ["", "Future frames, paired by clip:"]
    per_clip = {m: {k: np.array(v) for k, v in r["future_psnr_per_clip"].items()} for m, r in results.items()}
    for model, r in per_clip.items():
        gain = r["prediction"] - r["repeat first"]
        lines.append(f"- {model}: prediction - repeat first {gain.mean():+.2f} dB, better in "
                     f"{int((gain > 0).sum())}/{len(gain)} clips")
    names = list(per_clip)
    for a, b in zip(names, names[1:]):
        gain = per_clip[b]["prediction"] - per_clip[a]["prediction"]
        lines.append(f"- {b} - {a}: prediction {gain.mean():+.2f} dB, better in {int((gain > 0).sum())}/{len(gain)} "
                     f"clips")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, nargs="+", default=[REPO / "examples" / "toy" / "model"])
    ap.add_argument("--seeds", default="1000000:1000012", help="held-out world seeds, A:B or a list")
    ap.add_argument("--infer-steps", type=int, default=20)
    ap.add_argument("--loss-clips", type=int, default=64, help="clips of each set for the flow loss")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "toy-prior")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "toy-prior")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TOY_THREADS", "2")))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    seeds = ablation.parse_range(args.seeds)
    # each model its own work folder (two models may share a folder name)
    results = {os.path.relpath(m.resolve(), Path.cwd()): measure(m.resolve(), seeds, args, args.work / f"{k}-{m.name}")
               for k, m in enumerate(args.models)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "prior.json", json.dumps({"seeds": args.seeds, "results": results}, indent=1))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
