"""train.py's step: its overhead over a bare training loop, and its cost per frame count.

On the larger tiny Wan2.1-I2V (benchmarks/common.py; rank-16 LoRA, fp32, CPU) and a synthetic job
(a moving box, 64x64, 16 fps), each configuration in its own subprocess:

  (a) overhead at 17 frames: the real `engine.trainer.Trainer` (DeepSpeed PipelineModule, one stage, the
      BatchStream drawing noise and timesteps, logging) against a bare loop on the same transformer and
      LoRA - one fixed BatchStream batch, `adapter.predict`, `flow_loss`, backward, torch AdamW -
      activation checkpointing off in both, then on in both (the Trainer through DeepSpeed's per-layer
      checkpointing, the bare loop through the transformer's own). With checkpointing the same Trainer
      then runs again with the fix proposed for engine/trainer.py (`tell_deepspeed_non_reentrant`).
      The bare loop's steps run interleaved with train.py's, inside one `Trainer.run` (its progress
      callback), after warm-up. A train.py step is the time between two consecutive steps' ends in
      `Trainer.run` less the bare steps in between: one whole iteration of its loop.
  (b) step time and peak memory of train.py at 5/13/21/49 frames, with and without activation
      checkpointing. Peak memory = peak RSS during the steps (the kernel's VmHWM, reset after setup
      through /proc/self/clear_refs; a 2 ms sampling thread where that is refused) above the RSS after
      setup (weights paged in, LoRA, engine, cached latents; freed heap returned with malloc_trim first).

Step times are medians of wall time, beside process CPU time (which other processes on a shared machine
do not inflate). Target for (a): train.py / bare <= 1.05.

    python benchmarks/train_step.py [--quick] [--part a|b] [--keep DIR] [--threads N]

About 7 minutes on 2 cores (--quick: about 2).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from benchmarks.common import PeakRSS, build_larger_tiny, kernel_peak_rss, reset_peak_rss, rss  # noqa: E402

TARGET = 1.05
SIZE = 64  # width = height
COMPARE_FRAMES = 17
MEMORY_FRAMES = (5, 13, 21, 49)
# (warm-up, measured steps): per loop for (a); for (b), fewer at 49 frames. Steps vary by some 10% on a shared
# machine: (a) needs about 30 steps per loop to resolve 5%.
FULL = {"compare": (2, 30), "memory": (1, 4), "memory49": (1, 2)}
QUICK = {"compare": (1, 3), "memory": (1, 1), "memory49": (1, 1)}


# ------------------------------------------------------------------------------------------ the job


def write_job(root: Path, model: Path, frames: int = 50) -> Path:
    """A clip of a box moving over a gradient, its mask folder and edit.toml; returns the toml (an existing
    job is reused, so its encode cache stays warm)."""
    toml = root / "edit.toml"
    if toml.exists() and (root / "src.mp4").exists():
        return toml
    import numpy as np
    from PIL import Image

    import media

    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    bg = np.stack([xx * 255 // SIZE, yy * 255 // SIZE, np.full_like(xx, 160)], -1).astype(np.uint8)
    clip, masks = [], root / "masks"
    masks.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        f, m = bg.copy(), np.zeros((SIZE, SIZE), np.uint8)
        x = i % (SIZE - 16)
        f[16:40, x:x + 16] = (250, 250, 40)
        m[16:40, x:x + 16] = 255
        clip.append(f)
        Image.fromarray(m).save(masks / f"{i}.png")
    media.write_video(root / "src.mp4", np.stack(clip), 16)
    toml.write_text(
        f"name = 'bench'\noutput_dir = 'runs'\n[model]\nckpt_path = '{model}'\ndtype = 'float32'\n"
        f"[data]\nvideo = 'src.mp4'\nmask = 'masks'\ncaption = 'a yellow box'\nwidth = {SIZE}\nheight = {SIZE}\n"
        "[adapter]\nrank = 16\n[training]\nreference_steps = 0\nsave_every_n_steps = 0\n"
        "checkpoint_every_n_minutes = 0\n")
    return toml


def now() -> tuple[float, float]:
    """(wall, this process's CPU time): CPU time does not grow while other processes hold the cores."""
    return time.perf_counter(), time.process_time()


def since(t0: tuple[float, float]) -> tuple[float, float]:
    t1 = now()
    return t1[0] - t0[0], t1[1] - t0[1]


class StepClock:
    """A tqdm stand-in for `Trainer.run(progress=...)`: (wall, CPU) time between consecutive steps' ends, so
    each interval is one whole iteration of the loop. `between(k)`, if given, runs after step k's end, outside
    the intervals (the bare loop's steps, interleaved with train.py's)."""

    def __init__(self, between: Callable[[int], None] | None = None) -> None:
        self.between = between
        self.last = now()
        self.times: list[tuple[float, float]] = []

    def update(self, n: int = 1) -> None:  # noqa: ARG002 (tqdm's signature)
        t = now()
        self.times.append((t[0] - self.last[0], t[1] - self.last[1]))
        if self.between is not None:
            self.between(len(self.times))
        self.last = now()

    def set_postfix(self, **kwargs: object) -> None:
        pass


# ------------------------------------------------------------------------------------------ worker


def setup(toml: Path, frames: int, checkpointing: bool) -> tuple:
    """What train.py does before its loop (engine.train_job.run_training, minus outputs): cfg, adapter,
    the encoded job and a Trainer (its stage's length is set per call by `trainer_steps`)."""
    import torch

    from config.loader import load_config
    from datasets.job import load_job
    from engine.train import distributed as dist_utils
    from engine.train.job import encode_job, plan_stages
    from engine.train.run_dir import RunDir
    from engine.train.trainer import Trainer
    from models.lora import add_lora
    from models.registry import make_adapter

    cfg = load_config(toml, [f"data.frames={frames}", "training.steps=1",
                             f"training.activation_checkpointing={str(checkpointing).lower()}"])
    dist = dist_utils.setup()
    adapter = make_adapter(cfg.model, dist.device)
    encoded = encode_job(cfg, adapter, load_job(cfg, edited=False), dist)
    transformer = adapter.load_transformer()
    torch.manual_seed(cfg.seed)
    add_lora(transformer, adapter.lora_target_modules(), cfg.adapter.rank, float(cfg.adapter.rank))
    trainer = Trainer(cfg, dist, adapter, transformer, plan_stages(cfg, encoded), RunDir.new(cfg.output_dir, "bench"),
                      save_lora=lambda path, state: None)  # LoRA files are not written
    return cfg, adapter, encoded, transformer, trainer


def trainer_steps(trainer, clock: StepClock, n: int) -> list[tuple[float, float]]:
    """n more steps of the real loop (`Trainer.run` continues from `trainer.step`); returns the n - 1 intervals
    between consecutive steps' ends (the first lacks the previous step's logging and stop/checkpoint
    agreement, so it is dropped)."""
    trainer.stages[0].steps = trainer.step + n
    start = len(clock.times)
    trainer.run(progress=clock)
    return clock.times[start + 1:]


def tell_deepspeed_non_reentrant(trainer) -> bool:
    """The fix proposed for engine/trainer.py, applied to a built Trainer: DeepSpeed recognises only its own
    non-reentrant checkpoint function; for any other it makes every floating first-stage input require grad
    (as reentrant checkpointing needs), which back-propagates into the inputs for nothing. False if the
    engine already treats its checkpointing as non-reentrant."""
    from deepspeed.runtime.activation_checkpointing.checkpointing import non_reentrant_checkpoint

    engine = trainer.engine
    reentrant = getattr(engine, "_reentrant_activation_checkpointing", None)  # DeepSpeed 0.19's check
    if reentrant is None or not reentrant():
        return False
    engine.module.activation_checkpoint_func = non_reentrant_checkpoint
    return True


def make_bare_loop(cfg, adapter, encoded, transformer, checkpointing: bool):
    """The bare step on one fixed batch of the same BatchStream: predict, flow_loss, backward, AdamW."""
    import torch

    from engine.train.batches import BatchStream, TimeSampling
    from engine.train.flow import flow_loss
    from models.base import Conditioning

    stream = BatchStream(adapter, {"video": encoded["video"]}, {"video": 1.0}, cfg.training.micro_batch_size_per_gpu,
                         cfg.seed, 0, TimeSampling())
    (x, t, text, image), (target, weight) = next(stream.at(0))
    c = Conditioning(None, text, image if image.numel() else None)
    params = [p for p in transformer.parameters() if p.requires_grad]
    o = cfg.optimizer
    opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps)
    if checkpointing:
        adapter.enable_checkpointing()  # the transformer's own; the Trainer's layer list is checkpointed by DeepSpeed

    def step() -> tuple[float, float]:
        t0 = now()
        loss = flow_loss(adapter.predict(x, t, c), target, weight)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss)
        return since(t0)

    return step


def trim_heap() -> None:
    """Return freed heap pages to the OS, so the baseline RSS holds no garbage of setup."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def interleaved(trainer, bare: Callable[[], tuple[float, float]], warm: int, n: int) -> dict[str, list]:
    """n measured steps of train.py and of the bare loop, after `warm` of each, in ONE `Trainer.run`: two bare
    steps after every other train.py step (T BB T T BB T ...), so drift and load bursts hit both alike and
    half the steps of each loop follow a step of the other."""
    bare_times: list[tuple[float, float]] = []

    def between(k: int) -> None:
        if k % 2:
            bare_times.extend(bare() for _ in range(2))

    train_times = trainer_steps(trainer, StepClock(between), 1 + warm + n)
    return {"train": train_times[warm:], "bare": bare_times[warm:warm + n]}


def compare(toml: Path, frames: int, ckpt: bool, warm: int, n: int) -> dict:
    """train.py against the bare loop; with checkpointing, then again with the fix proposed for
    engine/trainer.py applied to the same Trainer."""
    import torch

    cfg, adapter, encoded, transformer, trainer = setup(toml, frames, ckpt)
    bare = make_bare_loop(cfg, adapter, encoded, transformer, ckpt)
    phases = {"trainer": interleaved(trainer, bare, warm, n)}
    if ckpt and tell_deepspeed_non_reentrant(trainer):
        phases["fixed"] = interleaved(trainer, bare, warm, n)
    return {"phases": phases, "threads": torch.get_num_threads()}


def worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    frames, ckpt, plan = spec["frames"], spec["checkpointing"], spec["plan"]
    if spec["mode"] == "compare":
        return compare(Path(spec["toml"]), frames, ckpt, *plan)
    warm, steps = plan
    _, _, encoded, transformer, trainer = setup(Path(spec["toml"]), frames, ckpt)
    _, f, h, w = encoded["video"][0].latents.shape
    tokens = f * (h // 2) * (w // 2)  # patch 1x2x2
    with torch.no_grad():  # the weights are mmap-ed from the safetensors files: page them in before the baseline
        for p in transformer.parameters():
            p.sum()
    trim_heap()
    base = rss()
    clock = StepClock()
    exact = reset_peak_rss()
    with contextlib.nullcontext() if exact else PeakRSS() as sampled:  # no sampling thread unless needed
        times = trainer_steps(trainer, clock, 1 + warm + steps)[warm:]
    peak = kernel_peak_rss() if exact else sampled.peak
    return {"times": times, "base": base, "peak": peak, "exact": exact, "tokens": tokens}


# ------------------------------------------------------------------------------------------ driver


def run_worker(spec: dict) -> dict:
    # Passive OpenMP waiting: spinning threads starve each other when other processes share the cores.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONPATH": str(REPO)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)  # a world of one, set up by engine.distributed
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env=env, cwd=Path(spec["toml"]).parent)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"worker {spec['mode']} {spec['frames']} frames failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer steps; noisier figures)")
    parser.add_argument("--keep", type=Path, help="build the model and job here and keep them (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker (default 1: on a shared 2-core machine two OpenMP threads "
                             "slow down several-fold whenever another process runs)")
    parser.add_argument("--part", choices=("a", "b", "all"), default="all", help="run only part (a) or (b)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    plans = QUICK if args.quick else FULL
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        model = build_larger_tiny(root / "wan-bench")
        toml = write_job(root / "job", model)
        base = {"toml": str(toml), "threads": args.threads}
        specs = []
        if args.part in ("a", "all"):
            specs += [{**base, "mode": "compare", "frames": COMPARE_FRAMES, "checkpointing": ck,
                       "plan": plans["compare"]} for ck in (False, True)]
        if args.part in ("b", "all"):
            specs += [{**base, "mode": "memory", "frames": f, "checkpointing": ck,
                       "plan": plans["memory49" if f == 49 else "memory"]}
                      for f in MEMORY_FRAMES for ck in (False, True)]
        results = []
        for i, spec in enumerate(specs, 1):
            print(f"[{i}/{len(specs)}] {spec['mode']}, {spec['frames']} frames, activation checkpointing "
                  f"{'on' if spec['checkpointing'] else 'off'} ({time.time() - started:.0f} s)", file=sys.stderr)
            results.append(run_worker(spec))
    compare = {s["checkpointing"]: r for s, r in zip(specs, results) if s["mode"] == "compare"}
    memory = {(s["frames"], s["checkpointing"]): r for s, r in zip(specs, results) if s["mode"] == "memory"}
    header(plans, args.threads, compare, memory)
    ratios = report_a(compare) if compare else {}
    if memory:
        report_b(memory)
    print(f"\nWhole benchmark: {time.time() - started:.0f} s.")
    if ratios:
        verdict = "PASS" if max(ratios.values()) <= TARGET else "FAIL"
        print(f"verdict (a): train.py / bare = {ratios[False]:.3f} (activation checkpointing off), "
              f"{ratios[True]:.3f} (on); target <= {TARGET:.2f}: {verdict}")
    return 0


def header(plans: dict, threads: int, compare: dict, memory: dict) -> None:
    warm, n = plans["compare"]
    print(f"train.py step benchmark: larger tiny Wan2.1-I2V (~90 M params, fp32), LoRA rank 16, {SIZE}x{SIZE}, "
          f"CPU, {threads} torch thread(s); each configuration in its own process.")
    print("A step = one optimizer step (forward, backward, AdamW); for train.py one whole iteration of Trainer.run "
          "(batch draw, DeepSpeed engine, logging). Medians of wall and of process CPU time:")
    if compare:
        print(f"  (a) of {n} steps per loop after {warm} warm-up, the bare loop's steps interleaved with train.py's "
              "in one Trainer.run;")
    if memory:
        exact = all(r["exact"] for r in memory.values())
        print(f"  (b) of {plans['memory'][1]} steps ({plans['memory49'][1]} at 49 frames) after warm-up; peak memory = "
              "peak RSS during the steps above the RSS after setup ("
              + ("kernel VmHWM, reset after setup" if exact else "sampled every 2 ms") + ").")


def wall(times: list) -> float:
    return med([t[0] for t in times])


def cpu(times: list) -> float:
    return med([t[1] for t in times])


def report_b(memory: dict) -> None:
    print(f"\n(b) train.py step time (wall and CPU s) and peak memory, {SIZE}x{SIZE}")
    print(f"  {'':>14}  {'activation ckpt off':^25}  {'activation ckpt on':^25}")
    cols = f"{'wall s':>8}{'cpu s':>8}{'peak MB':>9}"
    print(f"  {'frames':>6}{'tokens':>8}  {cols}  {cols}{'mem saved':>11}")
    for f in MEMORY_FRAMES:
        off, on = memory[(f, False)], memory[(f, True)]
        p_off, p_on = ((r["peak"] - r["base"]) / 2**20 for r in (off, on))
        saved = f"{1 - p_on / p_off:>11.0%}" if p_off > 0 else f"{'-':>11}"
        print(f"  {f:>6}{off['tokens']:>8}  {wall(off['times']):>8.3f}{cpu(off['times']):>8.3f}{p_off:>9.0f}  "
              f"{wall(on['times']):>8.3f}{cpu(on['times']):>8.3f}{p_on:>9.0f}{saved}")
    bases = [r["base"] / 2**20 for r in memory.values()]
    print(f"  RSS after setup (model, LoRA, engine, latents): {min(bases):.0f}..{max(bases):.0f} MB.")


def report_a(compare: dict) -> dict[bool, float]:
    """Print table (a); return train.py / bare (medians of wall time) per checkpointing setting."""
    print(f"\n(a) train.py vs a bare loop (same transformer, LoRA, batch shape), {COMPARE_FRAMES} frames")
    print(f"  {'activation ckpt':<17}{'loop':<25}{'wall s':>8}{'ratio':>7}{'paired':>8}{'cpu s':>8}{'ratio':>7}")
    ratios = {}
    for ck, r in compare.items():
        for i, (phase, label) in enumerate((("trainer", "train.py (Trainer)"), ("fixed", "train.py + proposed fix"))):
            if phase not in r["phases"]:
                continue
            ts, bare = r["phases"][phase]["train"], r["phases"][phase]["bare"]
            if i == 0:
                print(f"  {'on' if ck else 'off':<17}{'bare loop':<25}{wall(bare):>8.3f}{'':>15}{cpu(bare):>8.3f}")
                ratios[ck] = wall(ts) / wall(bare)
            paired = med([a[0] / b[0] for a, b in zip(ts, bare)])
            print(f"  {'':<17}{label:<25}{wall(ts):>8.3f}{wall(ts) / wall(bare):>7.3f}{paired:>8.3f}{cpu(ts):>8.3f}"
                  f"{cpu(ts) / cpu(bare):>7.3f}")
    print("  ratio: of the medians (the fix against the bare steps of its own run); paired: median of the ratios of")
    print("  neighbouring steps; cpu: process CPU time.")
    return ratios


if __name__ == "__main__":
    sys.exit(main())
