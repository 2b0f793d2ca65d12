"""Benchmark: infer.py's denoising loop vs diffusers' WanImageToVideoPipeline on the same tiny model.

Builds a tiny random Wan2.1-I2V (diffusers layout) in a temp folder, encodes one `i2v` sample once, then
times, interleaved (median of --repeats), the denoising loop only (first transformer call to the last
scheduler step; the thread's CPU time, which other processes on a shared machine do not inflate, with
the wall time beside it) of:

  pipe        WanImageToVideoPipeline.__call__ (its own encoders run before the loop and are not timed)
  ours        engine.sampler.sample through the adapter (what infer.py runs)
  pipe+fbc@T  the pipeline with diffusers' first-block cache (threshold T) on its transformer
  ours+fbc@T  ours with --step-cache --step-cache-threshold T (the same hook)

It prints the largest latent difference between ours and the pipeline (0 = the same computation), and
for each threshold the block calls the cache skipped and the mean absolute difference it causes in the
decoded frames ([0, 1] scale). The random tiny model's first-block output changes by more than 5% from
step to step, so the default 0.05 skips nothing on it; 0.2 shows the cache at work.

Usage: python benchmarks/infer.py [--repeats 7] [--steps 20] [--frames 13] [--width 160] [--height 96]
                                  [--thresholds 0.05 0.2] [--threads 1]
Target: ours / pipe <= 1.0 (both with and without the cache). Both run the same operations, so the ratio
is 1 up to timing noise; on a busy machine, raise --repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.schema import ModelConfig  # noqa: E402
from datasets.samples import inference_sample  # noqa: E402
from engine.encode.cache import EncodeCache  # noqa: E402
from engine.encode.samples import encode_samples  # noqa: E402
from engine.infer.sampler import SamplerSettings, base_scheduler_config, sample  # noqa: E402

PROMPT, NEGATIVE, SEED = "p3rs0n, a blue square", "blurry, low quality", 3


class LoopClock:
    """Time from the transformer's first forward in a run to `stop()` (or the last step callback): the
    thread's CPU time (with one torch thread all the work is on this thread, and other processes on a
    shared machine do not inflate it) and the wall time."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.start: tuple[float, float] | None = None
        self.end = (0.0, 0.0)
        self.block_calls = 0
        transformer.register_forward_pre_hook(self._first)
        for block in transformer.blocks:  # on a submodule: the cache skips the block's body, not its call
            block.attn1.register_forward_pre_hook(self._block)

    def _first(self, *_) -> None:
        if self.start is None:
            self.start = (time.thread_time(), time.perf_counter())

    def _block(self, *_) -> None:
        self.block_calls += 1

    def reset(self) -> None:
        self.start, self.block_calls = None, 0

    def stop(self, *_, **__) -> dict:
        self.end = (time.thread_time(), time.perf_counter())
        return {}

    @property
    def seconds(self) -> tuple[float, float]:
        return self.end[0] - self.start[0], self.end[1] - self.start[1]


def clip(frames: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
    mask = np.zeros((frames, h, w), bool)
    mask[:, h // 4:3 * h // 4, w // 4:w // 2] = True
    edited = video[0].copy()
    edited[mask[0]] = (40, 40, 250)
    return video, mask, edited


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--frames", type=int, default=13)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.2],
                    help="first-block cache thresholds (0.05: infer.py's default)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time then covers all the work)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from engine.infer.generate import quiet_torchvision_notice

    quiet_torchvision_notice()
    from diffusers import WanImageToVideoPipeline
    from diffusers.hooks import FirstBlockCacheConfig
    from PIL import Image

    from models.registry import make_adapter
    from models.wan.tiny import build_tiny_wan

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_wan(Path(tmp) / "tiny", "diffusers", seed=0, dtype="fp32")
        video, mask, edited = clip(args.frames, args.height, args.width)
        adapter = make_adapter(ModelConfig(ckpt_path=str(tiny), dtype="float32"), "cpu")
        s = inference_sample(video, mask, edited, PROMPT, "i2v")
        (enc,), extra = encode_samples(adapter, [s], EncodeCache(Path(tmp) / "cache"), extra_prompts=[NEGATIVE])
        adapter.unload()
        ours_clock = LoopClock(adapter.load_transformer())
        pipe = WanImageToVideoPipeline.from_pretrained(tiny, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        pipe_clock = LoopClock(pipe.transformer)
        base = base_scheduler_config(tiny)

        def run_ours(threshold: float | None) -> torch.Tensor:
            settings = SamplerSettings(steps=args.steps, guidance=args.guidance, shift=base["flow_shift"],
                                       step_cache=threshold is not None, step_cache_threshold=threshold or 0.0)
            ours_clock.reset()
            latents = sample(adapter, enc.conditioning(), extra[NEGATIVE][None], settings, SEED, base, progress=False)
            ours_clock.stop()
            return latents

        def run_pipe(threshold: float | None) -> torch.Tensor:
            if threshold is not None:
                pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
            pipe_clock.reset()
            try:
                out = pipe(image=Image.fromarray(edited), prompt=PROMPT, negative_prompt=NEGATIVE, height=args.height,
                           width=args.width, num_frames=args.frames, num_inference_steps=args.steps,
                           guidance_scale=args.guidance, generator=torch.Generator().manual_seed(SEED),
                           output_type="latent", callback_on_step_end=pipe_clock.stop)
            finally:
                if threshold is not None:
                    pipe.transformer.disable_cache()
            return out.frames

        runs = {"pipe": (run_pipe, None, pipe_clock), "ours": (run_ours, None, ours_clock)}
        for t in args.thresholds:
            runs[f"pipe+fbc@{t:g}"] = (run_pipe, t, pipe_clock)
            runs[f"ours+fbc@{t:g}"] = (run_ours, t, ours_clock)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
        latents, blocks = {}, {}
        for name, (fn, threshold, clock) in runs.items():  # warm-up (first-call allocations, lazy imports)
            latents[name] = fn(threshold)
            blocks[name] = clock.block_calls
        order = list(runs)
        for i in range(args.repeats):
            for name in order[i % 2::1] + order[:i % 2]:  # rotate: no variant always runs right after another
                fn, threshold, clock = runs[name]
                fn(threshold)
                times[name].append(clock.seconds)

        def frames(lat: torch.Tensor) -> np.ndarray:
            return ((adapter.decode_latents(lat)[0] + 1) / 2).numpy()

        med = {k: statistics.median(c for c, _ in v) for k, v in times.items()}  # CPU time
        wall = {k: statistics.median(w for _, w in v) for k, v in times.items()}
        same = (latents["ours"] - latents["pipe"]).abs().max().item()
        plain = frames(latents["ours"])
        print(f"tiny Wan2.1-I2V, {args.frames} frames {args.width}x{args.height}, {args.steps} steps, guidance "
              f"{args.guidance:g}, {args.threads} thread(s), median of {args.repeats} (denoising loop only)")
        print(f"  {'':14s} {'CPU ms':>8s} {'wall ms':>8s}")
        for name in runs:
            print(f"  {name:14s} {med[name] * 1000:8.1f} {wall[name] * 1000:8.1f}   block calls {blocks[name]}")
        print(f"ours / pipe                 {med['ours'] / med['pipe']:.3f}  (target <= 1.0; CPU time, wall "
              f"{wall['ours'] / wall['pipe']:.3f}); max |latent diff| {same:.1e}")
        for t in args.thresholds:
            o, p = f"ours+fbc@{t:g}", f"pipe+fbc@{t:g}"
            diff = np.abs(plain - frames(latents[o]))
            print(f"step cache {t:<5g} ours / pipe {med[o] / med[p]:.3f}  (target <= 1.0); speed-up "
                  f"{med['ours'] / med[o]:.2f}x; block calls {blocks[o]} of {blocks['ours']}; "
                  f"mean |frame diff| {diff.mean():.4f} (max {diff.max():.3f}, frames in [0, 1])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
