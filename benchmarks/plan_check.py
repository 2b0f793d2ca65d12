"""The planner (`train.py --plan`) against real runs, and its figures for Wan2.1-I2V-14B.

(a) A small Wan2.1-I2V (3 blocks, 4 x 32 heads) trained by train.py's Trainer on this CPU at a few sizes
    and frame counts, with and without activation checkpointing: the step's peak live tensor bytes above the
    resident state (from the CPU allocator's events) and its FLOPs (torch's counter) next to the plan's.
(b) Wan2.1-I2V-14B-480P at 832x480, LoRA r16: the plan without memory options, with each option added, and
    with the reference implementation's settings (32 of 40 blocks swapped, checkpointing, bf16 LoRA) at
    5/13/21/49 frames next to its reported RTX 4090 figures.

    python benchmarks/plan_check.py [--part a|b]

About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

SIZES = {"transformer": dict(num_attention_heads=4, attention_head_dim=32, ffn_dim=384, num_layers=3)}
CASES = [(5, 64, 64), (17, 64, 64), (9, 96, 64), (21, 128, 128), (33, 128, 128)]
# The reference implementation's README (RTX 4090, 832x480, 32 blocks swapped): frames -> (GB, s/step).
REFERENCE = {5: (11.1, 7.6), 13: (12.5, 10.8), 21: (14.5, 14.8), 49: (21.5, 31.9)}


def part_a() -> None:
    import torch

    from config.schema import Config
    from engine.plan.measure import measure_training_steps
    from engine.plan.model import resolve_model
    from engine.plan.steps import trace_training_step
    from models.wan.tiny import build_tiny_wan

    torch.set_num_threads(1)  # tiny ops: more threads only spin
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config()
        cfg.model.ckpt_path = str(build_tiny_wan(Path(tmp) / "m", "diffusers", seed=0, sizes=SIZES))
        cfg.model.dtype = "float32"
        spec = resolve_model(cfg)
        print("(a) real Trainer step on this CPU vs plan: peak live bytes above the resident state, FLOPs")
        print(f"{'frames':>6} {'size':>8} {'ckpt':>5} {'measured MB':>12} {'planned MB':>11} {'ratio':>6} "
              f"{'measured GFLOP':>15} {'planned':>8} {'ratio':>6}")
        for checkpointing in (True, False):
            for m in measure_training_steps(cfg, CASES, checkpointing):
                tr = trace_training_step(spec, cfg, m.frames, m.height, m.width, checkpointing=checkpointing)
                plan, real = tr.peak - tr.weights, m.peak_above_resident
                print(f"{m.frames:>6} {f'{m.width}x{m.height}':>8} {'on' if checkpointing else 'off':>5} "
                      f"{real / 2**20:>12.2f} {plan / 2**20:>11.2f} {plan / real:>6.3f} "
                      f"{m.flops / 1e9:>15.2f} {tr.flops / 1e9:>8.2f} {tr.flops / m.flops:>6.3f}")


def part_b() -> None:
    from config.schema import Config
    from engine.plan.gpus import GPUS, GiB
    from engine.plan.model import resolve_model
    from engine.plan.report import plan_training, plan_with, step_seconds

    gpu = next(g for g in GPUS if g.name == "RTX 4090")
    cfg = Config()
    cfg.data.frames, cfg.data.width, cfg.data.height = 49, 832, 480
    spec = resolve_model(cfg, "wan2.1-i2v-14b-480p")
    none = {"training.activation_checkpointing": False, "training.blocks_to_swap": 0, "adapter.dtype": "float32"}
    rows = [("no memory option", none),
            ("+ checkpointing", {**none, "training.activation_checkpointing": True}),
            ("+ 32 blocks swapped", {**none, "training.activation_checkpointing": True, "training.blocks_to_swap": 32}),
            ("+ LoRA in bf16", {"training.blocks_to_swap": 32, "adapter.dtype": "bfloat16"}),
            ("+ fp8 storage", {"training.blocks_to_swap": 32, "adapter.dtype": "bfloat16",
                               "model.transformer_dtype": "float8"}),
            ("checkpointing + fp8, no swap", {"adapter.dtype": "bfloat16", "model.transformer_dtype": "float8"})]
    print("\n(b) Wan2.1-I2V-14B-480P, 832x480, 49 frames, LoRA r16, AdamW, one GPU")
    print(f"{'settings':<30} {'weights':>8} {'activ.':>7} {'optim.':>7} {'total GiB':>9} {'TFLOP/step':>10} "
          f"{'4090 s/step @50%':>17}")
    for label, changes in rows:
        p = plan_training(plan_with(cfg, **changes), spec, composed=True)
        m = p.memory
        optimizer = (m.optimizer_state + m.gradients) / GiB
        print(f"{label:<30} {m.weights / GiB:>8.1f} {m.activations / GiB:>7.1f} "
              f"{optimizer:>7.1f} {m.total / GiB:>9.1f} {p.flops_per_step / 1e12:>10,.0f} "
              f"{step_seconds(p, gpu, 0.5):>17.1f}")
    ref = {"training.blocks_to_swap": 32, "adapter.dtype": "bfloat16"}
    print("\nreference settings (32 blocks swapped, checkpointing, bf16 LoRA) vs its README (RTX 4090)")
    print(f"{'frames':>6} {'plan GiB':>9} {'ref GB':>7} {'TFLOP/step':>10} {'plan s @50%':>12} {'ref s':>6} "
          f"{'utilization matching ref':>25}")
    for frames, (gb, secs) in REFERENCE.items():
        p = plan_training(plan_with(cfg, **ref, **{"data.frames": frames}), spec, composed=True)
        util = p.flops_per_step / (secs * gpu.bf16_tflops * 1e12)
        print(f"{frames:>6} {p.memory.total / GiB:>9.1f} {gb:>7.1f} {p.flops_per_step / 1e12:>10,.0f} "
              f"{step_seconds(p, gpu, 0.5):>12.1f} {secs:>6.1f} {util:>25.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("a", "b"))
    args = parser.parse_args()
    if args.part in (None, "a"):
        part_a()
    if args.part in (None, "b"):
        part_b()


if __name__ == "__main__":
    main()
