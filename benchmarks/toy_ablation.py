"""The paper's ablation at toy scale, on held-out clips of the toy world with exact ground-truth edits.

    python -m benchmarks.toy_ablation                        # 8 held-out clips x 2 seeds (about 10 min on 2 cores)
    python -m benchmarks.toy_ablation --clips 2 --seeds 1 --steps 2 --infer-steps 2   # smoke run (CI)

Each held-out clip (world seeds from 1,000,000: never seen in pretraining) gets a one-shape recolor edit
(examples/toy/world.py). Variants, all through the project's own path (`engine.train_job.run_training`
and `engine.generate.generate`, in-process, with the config of examples/toy.toml):
  a  the base model from the edited first frame, no LoRA (`i2v` preset)
  a' the base model with the mask-aware condition (`loraedit` preset), no LoRA
  b  naive LoRA (Sec. 3.1: training.mode = "naive", `i2v` preset)
  c  mask-aware LoRA (Sec. 3.3.1: training.mode = "loraedit")
  d  c + one edited later frame as reference (Sec. 3.3.2: data.reference_frames, stage 2)
  e  c in the low-cost short-clip mode (training.low_cost, clip_frames 5)
Also: the base model's I2V prediction of the *source* clip against the trivial baseline (repeat the first
frame) on the future frames, and the VAE's reconstruction PSNR (the ceiling of everything else).
Writes results.json, table.md and grid.png to --out (see benchmarks/toy_metrics.py for the scores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import toy_metrics  # noqa: E402
from config.loader import load_config  # noqa: E402
from examples.toy import jobs, world  # noqa: E402

TOY_TOML = REPO / "examples" / "toy.toml"


@dataclass
class Variant:
    name: str
    label: str
    preset: str
    train: list[str] | None = None  # config overrides of the LoRA training; None: no LoRA
    trigger: bool = True
    reference: bool = False
    extra: list[str] = field(default_factory=list)


VARIANTS = [
    Variant("a", "a: base, no LoRA", "i2v", trigger=False),
    Variant("a2", "a': base + mask-aware condition", "loraedit", trigger=False),
    Variant("b", "b: naive LoRA", "i2v", ["training.mode='naive'"]),
    Variant("c", "c: mask-aware LoRA", "loraedit", ["training.mode='loraedit'"]),
    Variant("d", "d: c + reference frame", "loraedit", ["training.mode='loraedit'"], reference=True),
    Variant("e", "e: c, low-cost clips", "loraedit", ["training.mode='loraedit'", "training.low_cost=true"]),
]


def job_config(job: Path, work: Path, model: Path, seed: int, v: Variant, args: argparse.Namespace, *more: str):
    info = json.loads((job / "case.json").read_text())
    sets = [
        f"model.ckpt_path='{model}'", f"data.video='{job / 'source'}'", f"data.mask='{job / 'masks'}'",
        f"data.edited_frame='{job / 'edited_first.png'}'", f"data.caption={json.dumps(info['caption'])}",
        f"data.edited_caption={json.dumps(info['edited_caption'])}",
        f"data.reference_frames='{job / 'reference' if v.reference else ''}'",
        f"data.cache_dir='{work / 'cache'}'", f"output_dir='{work / 'runs'}'", f"name='{job.name}-{v.name}-s{seed}'",
        f"seed={seed}", f"training.steps={args.steps}", f"training.reference_steps={args.reference_steps}",
        f"inference.steps={args.infer_steps}", f"inference.mask_preset='{v.preset}'",
        f"optimizer.lr={args.lr}", f"adapter.rank={args.rank}", *([] if v.trigger else ["data.trigger=''"]),
        *(v.train or []), *v.extra, *more,
    ]
    return load_config(TOY_TOML, sets)


def generate_frames(cfg, lora: Path | None) -> np.ndarray:
    from engine.infer.generate import LoraSpec, build_request, generate

    request = build_request(cfg, [LoraSpec(lora, 1.0)] if lora else [])
    return generate(cfg, request, progress=False).frames


def run_variant(job: Path, work: Path, model: Path, seed: int, v: Variant, args) -> np.ndarray:
    from engine.train.job import run_training

    cfg = job_config(job, work, model, seed, v, args)
    lora = None
    if v.train is not None:
        result = run_training(cfg)
        lora = result.lora
    return generate_frames(cfg, lora)


@torch.no_grad()
def vae_ceiling(model: Path, cases: list[world.EditCase]) -> float:
    """Reconstruction PSNR of the ground-truth edited clips through the toy VAE (the adapter's encode/decode)."""
    from datasets.samples import to_tensor
    from models.wan.adapter import WanAdapter

    adapter = WanAdapter(model, dtype=torch.float32)
    video = torch.stack([to_tensor(c.edited) for c in cases])
    recon = ((adapter.decode_latents(adapter.encode_video(video)) + 1) * 127.5).round()
    truth = (video + 1) * 127.5
    mse = float((recon - truth.round()).pow(2).mean())
    return 10 * np.log10(255**2 / mse)


def write_report(report: dict, out: Path) -> str:
    """results.json and table.md (the summary table, the paired claims, the future-frame baseline)."""
    s = report["settings"]
    clips, seeds = int(s["clips"]), int(s["seeds"])
    base, rows = report["future_frames"], report["baseline_rows"]
    wins = sum(b["base_model_psnr"] > b["repeat_first_psnr"] for b in rows)
    table = (
        f"{clips} held-out clips x {seeds} seeds; mean ± std over the {clips * seeds} runs; "
        f"frames 1..{report['frames'] - 1}; LoRA rank {s['rank']}, lr {s['lr']}, {s['steps']} steps "
        f"(+{s['reference_steps']} stage-2 steps for d), "
        f"{s['infer_steps']} sampling steps.\n\n"
        + toy_metrics.markdown_table(report["summary"], report["labels"])
        + "\n\nPaired differences (same clip, same seed):\n\n" + "\n".join(toy_metrics.paired_claims(report["rows"]))
        + f"\n\nFuture frames of the source clip (whole-frame PSNR, frames 1..T-1): base model "
        f"{base['base_model_psnr']['mean']:.2f} ± {base['base_model_psnr']['std']:.2f} dB, repeat the first frame "
        f"{base['repeat_first_psnr']['mean']:.2f} ± {base['repeat_first_psnr']['std']:.2f} dB (base model better in "
        f"{wins}/{len(rows)} runs). VAE reconstruction of the ground-truth clips (the ceiling): "
        f"{report['vae_reconstruction_psnr']:.2f} dB.\n")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("results.json", json.dumps(report, indent=1)), ("table.md", table)):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8, help="held-out clips (world seeds 1000000..)")
    ap.add_argument("--seeds", type=int, default=2, help="training/sampling seeds per clip")
    ap.add_argument("--steps", type=int, default=100, help="stage-1 LoRA steps")
    ap.add_argument("--reference-steps", type=int, default=50, help="stage-2 steps of variant d")
    ap.add_argument("--infer-steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--variants", default="a,a2,b,c,d,e", help="comma-separated subset of a,a2,b,c,d,e")
    ap.add_argument("--model", type=Path, default=REPO / "examples" / "toy" / "model")
    ap.add_argument("--out", type=Path, default=REPO / "examples" / "toy" / "results")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "toy-ablation", help="jobs, LoRAs, caches")
    ap.add_argument("--report-only", action="store_true", help="rewrite table.md from --out's results.json")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TOY_THREADS", "1")))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.report_only:
        report = json.loads((args.out / "results.json").read_text())
        report.setdefault("labels", {v.name: v.label for v in VARIANTS})
        report.setdefault("frames", world.FRAMES)
        print(write_report(report, args.out))
        return 0
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    wanted = set(args.variants.split(","))
    variants = [v for v in VARIANTS if v.name in wanted]
    model, work = args.model.resolve(), args.work.resolve()
    start = time.perf_counter()

    cases = [world.edit_case(s) for s in world.heldout_seeds(args.clips)]
    rows, baseline, grid_rows, saved = [], [], None, {}
    for case in cases:
        job = jobs.write_case(case, work / "jobs" / f"clip{case.params.seed}")
        truth, mask = jobs.read_truth(job)
        # The clip without the edited shape (other shapes drawn) and their masks: the color-blind motion score.
        without, others = world.render(dataclasses.replace(case.params, shapes=case.params.shapes[1:]))
        others = others.any(axis=0) if len(others) else np.zeros_like(mask)
        for seed in range(args.seeds):
            # The base model predicting the *source* clip from its own first frame vs repeating that frame.
            base_src = job_config(job, work, model, seed, VARIANTS[0], args,
                                  f"data.edited_frame='{job / 'source' / '00000.png'}'",
                                  f"data.edited_caption={json.dumps(case.caption)}")
            pred = generate_frames(base_src, None)
            baseline.append({"clip": case.params.seed, "seed": seed,
                             "base_model_psnr": toy_metrics.future_psnr(pred, case.source),
                             "repeat_first_psnr": toy_metrics.future_psnr(np.repeat(case.source[:1], len(truth), 0),
                                                                          case.source)})
            results = {}
            for v in variants:
                t0 = time.perf_counter()
                frames = run_variant(job, work, model, seed, v, args)
                results[v.name] = frames
                saved[f"{case.params.seed}-{v.name}-s{seed}"] = frames
                rows.append({"variant": v.name, "clip": case.params.seed, "seed": seed,
                             "seconds": time.perf_counter() - t0,
                             **toy_metrics.score_edit(frames, truth, mask, without, others)})
                print(f"clip {case.params.seed} seed {seed} {v.label}: " + ", ".join(
                    f"{k} {rows[-1][k]:.3g}" for k in toy_metrics.SCORES), flush=True)
            if grid_rows is None:
                grid_rows = [("source", case.source), ("ground truth", truth)] + [
                    (v.label, results[v.name]) for v in variants]

    labels = {v.name: v.label for v in variants}
    base = {k: {"mean": float(np.mean([b[k] for b in baseline])), "std": float(np.std([b[k] for b in baseline]))}
            for k in ("base_model_psnr", "repeat_first_psnr")}
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "seconds": time.perf_counter() - start,
              "vae_reconstruction_psnr": vae_ceiling(model, cases), "future_frames": base,
              "summary": toy_metrics.summarize(rows, "variant"), "labels": labels, "frames": int(truth.shape[0]),
              "rows": rows, "baseline_rows": baseline}
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(work / "frames.npz", **saved)  # every generated clip, to re-score without re-running
    toy_metrics.image_grid(grid_rows).save(args.out / ".grid.png.tmp", format="PNG")
    (args.out / ".grid.png.tmp").replace(args.out / "grid.png")
    table = write_report(report, args.out)
    print(table)
    print(f"wrote {args.out}/results.json, table.md, grid.png in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
