"""Chained generation of a long job: one window of `data.window` frames at a time (datasets.windows).

Window 1 is the ordinary generation from the edited first frame. Each next window takes the frames it shares with
the one before (`inference.window_overlap`, more for a last window moved back) from the result so far, keeps them
whole, and keeps the rest outside the edit mask from the source: the conditioning training gave every window.
With `inference.window_anchor = "source"` the kept region of those carried frames is re-anchored on the source's
pixels first, so the background's VAE round trips do not accumulate from window to window. Across the shared
frames the result blends from the earlier window to the later one, linearly.

The transformer (with the LoRAs) loads once and stays; the VAE, text and image encoders come and go per window
through the encode cache (the prompts are encoded once).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import torch

from config.progress import Progress, ProgressEvent, as_progress, report
from config.schema import Config
from datasets.job import Job
from datasets.preview import to_uint8
from datasets.samples import Sample, with_fill
from datasets.windows import Window, chain_windows, is_long, window_sample
from engine.encode.cache import EncodeCache, fingerprint
from engine.infer.generate import Generation, Inputs, Request, apply_loras, generate, load_inputs
from engine.infer.sampler import sample as run_sampler
from models.registry import family, make_adapter


def window_progress(progress: Progress | None, index: int, count: int) -> Progress | None:
    """`progress` with the window named: denoising steps count over all windows ("window 2/4, step 3/20")."""
    if progress is None:
        return None

    def forward(e: ProgressEvent) -> None:
        if e.phase == "denoise" and e.total:
            step, total = index * e.total + e.step, count * e.total
            progress(dataclasses.replace(e, step=step, total=total,
                                         message=f"window {index + 1}/{count}, step {e.step}/{e.total}"))
        else:
            progress(dataclasses.replace(e, message=(e.message + "; " if e.message else "")
                                         + f"window {index + 1}/{count}"))

    return forward


def blend_into(result: np.ndarray, frames: np.ndarray, w: Window) -> None:
    """Write a window's frames into `result`: over its first `head` frames the weight moves linearly from what the
    earlier window made (weight 1 on the first shared frame) toward this window's; after them, this window's."""
    result[w.start + w.head:w.end] = frames[w.head:]
    if w.start == 0:
        result[0] = frames[0]
        return
    for j in range(w.head):
        a = j / w.head
        mixed = (1 - a) * result[w.start + j].astype(np.float32) + a * frames[j].astype(np.float32)
        result[w.start + j] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def generate_job(cfg: Config, request: Request, device: torch.device | None = None, progress: Progress | None = None,
                 inputs: Inputs | None = None) -> Generation:
    """infer.py's generation: one pass (engine.infer.generate), or window by window for a long job."""
    if is_long(cfg.data.frames, cfg.data.window):
        return generate_chained(cfg, request, device, progress, inputs)
    return generate(cfg, request, device, progress, inputs)


def window_generation_sample(cfg: Config, job: Job, w: Window, k: int, prompt: str, preset: str,
                             carried: np.ndarray) -> Sample:
    """Window k's generation sample: window 1 starts from the edited first frame, a later one takes its shared
    frames whole from `carried` (their kept region back on the source's pixels with window_anchor = "source");
    the rest is kept outside the mask, as in training."""
    condition = job.frames.copy()
    if k == 0:
        condition[0] = job.edited_first
    else:
        head = slice(w.start, w.start + w.head)
        condition[head] = carried[head]
        if cfg.inference.window_anchor == "source":  # the carried frames' background back on the source's pixels
            keep = ~job.edit_mask[head]
            condition[head][keep] = job.frames[head][keep]
    sample = window_sample(job.frames, job.edit_mask, w, prompt, kind="inference", condition=condition, preset=preset)
    return with_fill(dataclasses.replace(sample, name=f"inference_window_{k}"), cfg.data.condition_fill, cfg.seed)


def generate_chained(cfg: Config, request: Request, device: torch.device | None = None,
                     progress: Progress | None = None, inputs: Inputs | None = None,
                     carried_from: np.ndarray | None = None,
                     on_window: Callable[[Window, np.ndarray], None] | None = None) -> Generation:
    """Generate a long job window by window; returns one `Generation` of the whole clip (the source's frame count).

    `carried_from` (uint8 [T, H, W, 3]): take each window's shared frames from these frames instead of the result
    so far (the benchmark's independent windows: from the ground truth, or from the source). `on_window(w, frames)`
    hears of each window's decoded frames."""
    from engine.encode.samples import encode_with_negative

    progress = as_progress(progress)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seconds = {"encode": 0.0, "load": 0.0, "denoise": 0.0, "decode": 0.0}
    inputs = inputs or load_inputs(cfg, request)
    job, whole = inputs.job, inputs.sample
    d, inf = cfg.data, cfg.inference
    windows = chain_windows(len(job.frames), d.window, inf.window_overlap)
    adapter = make_adapter(cfg.model, device)
    identity = adapter.weights_identity()
    cache = EncodeCache(d.cache_dir)
    guided = request.sampler.guided(adapter.experts())
    scheduler_config = family(cfg.model.type).scheduler_config_for(cfg.model.ckpt_path)
    result = np.zeros_like(job.frames)
    loaded = False
    for k, w in enumerate(windows):
        wp = window_progress(progress, k, len(windows))
        t0 = time.perf_counter()
        sample = window_generation_sample(cfg, job, w, k, whole.prompt, request.preset,
                                          result if carried_from is None else carried_from)
        encoded, negative = encode_with_negative(adapter, sample, cache, d.latent_mask,
                                                 request.negative_prompt if guided else None, wp)
        seconds["encode"] += time.perf_counter() - t0
        if not loaded:  # once: the transformer and its LoRAs stay for every window
            t1 = time.perf_counter()
            several = len(adapter.experts()) > 1
            for expert in adapter.experts():
                adapter.load_transformer("cpu" if several else None, expert=expert.name)
            apply_loras(adapter, request.loras)
            loaded = True
            seconds["load"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        latents = run_sampler(adapter, encoded.conditioning(), negative, request.sampler, request.seed + k,
                              scheduler_config, wp)
        seconds["denoise"] += time.perf_counter() - t2
        t3 = time.perf_counter()
        report(wp, "decode", message="decoding the latents")
        frames = to_uint8(adapter.decode_latents(latents)[0].float().cpu().numpy())
        adapter.unload("vae")
        seconds["decode"] += time.perf_counter() - t3
        if on_window is not None:
            on_window(w, frames)
        blend_into(result, frames, w)
    adapter.unload()
    digest = inputs.digest if carried_from is None else fingerprint(inputs.digest, "carried", carried_from)
    video = torch.from_numpy(result).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)
    return Generation(video, result, job, whole, digest, seconds, identity, str(device))
