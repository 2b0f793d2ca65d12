"""What training previews cost: measured on the toy model, planned at the paper's size.

    nice -n 10 python -m benchmarks.preview_overhead --part toy     # interleaved runs, medians (minutes on 2 cores)
    nice -n 10 python -m benchmarks.preview_overhead --part plan    # Wan2.1-I2V-14B at 49x832x480 (--plan's model)

(toy) examples/toy.toml as shipped (its example job) trained `--pairs` times with the default previews
('auto', training.preview_* defaults) and without, alternately in one process, the order flipped every pair: the
ratio of the training loop's wall time (TrainResult.seconds: steps, previews, LoRA files) with previews to
without, per pair, and its median; and, within each run with previews, the previews' own time (previews.jsonl)
over the rest of its loop, which a machine whose load changes between runs does not skew.
(plan) The FLOP model of train.py --plan and infer.py --plan for examples/edit.toml (the paper's settings): a
training step against a preview with the defaults (training.preview_steps transformer passes at guidance 1, plus
the VAE decode, counted by torch's FLOP counter on the meta device), times the previews 'auto' makes in 100 steps.
The step cache (on by default) skips passes, so the planned preview cost is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def part_toy(pairs: int, work: Path) -> None:
    import torch

    from config.loader import load_config
    from engine.train.job import run_training

    torch.set_num_threads(1)
    toml = REPO / "examples" / "toy.toml"
    base = [f"output_dir='{work}'", f"data.cache_dir='{work / 'cache'}'"]
    run_training(load_config(toml, [*base, "training.steps=2", "training.reference_steps=1"]), progress=False)  # warm
    ratios, seconds, shares = [], {"on": [], "off": []}, []
    preview_seconds = []
    for i in range(pairs):
        order = ("on", "off") if i % 2 == 0 else ("off", "on")
        got = {}
        for kind in order:
            more = ["training.preview_every_n_steps='auto'"] if kind == "on" else []
            result = run_training(load_config(toml, [*base, *more]), progress=False)
            got[kind] = result.seconds
            seconds[kind].append(result.seconds)
            if kind == "on":
                entries = [json.loads(x) for x in (result.run_dir / "previews" / "previews.jsonl").read_text()
                           .splitlines()]
                preview_seconds += [e["seconds"] for e in entries]
                spent = sum(e["seconds"] for e in entries)
                shares.append(spent / (result.seconds - spent))  # the same run's own steps: immune to load swings
        ratios.append(got["on"] / got["off"])
        print(f"pair {i + 1}: with previews {got['on']:.1f} s, without {got['off']:.1f} s, ratio {ratios[-1]:.3f}",
              flush=True)
    print(f"toy ({len(ratios)} interleaved pairs): training loop with previews / without, median "
          f"{statistics.median(ratios):.3f} (pairs: {', '.join(f'{r:.3f}' for r in ratios)}); median seconds "
          f"{statistics.median(seconds['on']):.1f} vs {statistics.median(seconds['off']):.1f}; one preview median "
          f"{statistics.median(preview_seconds):.2f} s ({len(preview_seconds)} previews); previews' time over the "
          f"rest of the same run's loop: median {statistics.median(shares):.3f} "
          f"({', '.join(f'{x:.3f}' for x in shares)})")


def _tflop(text: str, label: str) -> float:
    m = re.search(rf"{label}\s+([\d,.]+) TFLOP", text)
    if not m:
        raise SystemExit(f"no '{label}' in the plan:\n{text}")
    return float(m.group(1).replace(",", ""))


def part_plan() -> None:
    import argparse as ap

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from config.loader import load_config
    from engine.plan.job import run_plan
    from engine.plan.model import build_vae, job_size, resolve_model
    from engine.train.previews import AUTO_PREVIEWS

    cfg = load_config(REPO / "examples" / "edit.toml", check_paths=False)
    t = cfg.training
    args = ap.Namespace(variant=None, gpu=[], gpu_memory=None, utilization=0.5)
    train = _tflop(run_plan(cfg, args, "train"), "FLOPs per step")
    preview_cfg = load_config(REPO / "examples" / "edit.toml", [f"inference.steps={t.preview_steps}",
                                                                 f"inference.guidance={t.preview_guidance}"],
                              check_paths=False)
    per_pass = _tflop(run_plan(preview_cfg, args, "infer"), "FLOPs per pass")
    spec = resolve_model(cfg)
    frames, height, width = job_size(cfg, spec)
    vae = build_vae(spec)
    latents = torch.zeros(1, vae.config.z_dim, (frames - 1) // 4 + 1, height // 8, width // 8, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        vae.decode(latents)
    decode = counter.get_total_flops() / 1e12
    passes = t.preview_steps * (2 if t.preview_guidance > 1 else 1)
    preview = passes * per_pass + decode
    steps = t.steps
    n = len(set(range(math.ceil(steps / AUTO_PREVIEWS), steps + 1, math.ceil(steps / AUTO_PREVIEWS))) | {steps})
    print(f"plan (examples/edit.toml, {frames} frames at {width}x{height}): training step {train:,.0f} TFLOP; "
          f"preview {passes} passes x {per_pass:,.0f} + VAE decode {decode:,.0f} = {preview:,.0f} TFLOP "
          f"({preview / train:.2f} steps); 'auto' = {n} previews in {steps} steps: +{n * preview / (steps * train):.1%}"
          " of the training FLOPs (without the step cache's savings)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("toy", "plan", "all"), default="all")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "preview-overhead")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.part in ("plan", "all"):
        part_plan()
    if args.part in ("toy", "all"):
        part_toy(args.pairs, args.work.resolve())
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
