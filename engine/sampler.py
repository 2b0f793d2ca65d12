"""The flow-matching sampler: denoise from seeded noise to latents with any `ModelAdapter`.

It is the loop of diffusers' `WanImageToVideoPipeline` with the model call going through the adapter
(`transformer_input` + `predict`), so with the same conditioning, seed, scheduler, steps and guidance
the latents are the pipeline's: the noise is drawn with `randn_tensor` and a CPU generator (same shape,
float32), the cond/uncond passes run separately in the same order inside `cache_context("cond"/"uncond")`,
and guidance is `uncond + g * (cond - uncond)`, skipped (one pass per step) when g <= 1.
The adapter supplies what differs per family (`initial_latents`, `scheduler_sigmas`): with them the loop is also
diffusers' `HunyuanVideoImageToVideoPipeline`'s (Euler with its sigmas, start latents mixed with the image latent).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm import tqdm

from models.base import Conditioning, ModelAdapter

if TYPE_CHECKING:  # diffusers loads lazily: infer.py reports bad input before paying for it
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

SCHEDULERS = ("unipc", "euler")

# Wan2.1-I2V's published scheduler config (Wan-AI/Wan2.1-I2V-14B-480P-Diffusers, scheduler/), used when the
# weights folder has none (the original release layout ships no scheduler config).
WAN_SCHEDULER = {
    "num_train_timesteps": 1000, "prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0,
    "solver_order": 2, "solver_type": "bh2", "predict_x0": True, "lower_order_final": True,
    "timestep_spacing": "linspace", "final_sigmas_type": "zero", "beta_schedule": "linear",
    "beta_start": 0.0001, "beta_end": 0.02,
}
# HunyuanVideo-I2V's scheduler (FlowMatchEuler, shift 7.0: diffusers' conversion default and the release's), for
# folders without a scheduler config (the original release layout).
HUNYUAN_SCHEDULER = {"num_train_timesteps": 1000, "shift": 7.0}
# The sampler each family's reference pipeline uses, for inference.scheduler = "auto".
FAMILY_SCHEDULERS = {"wan": "unipc", "hunyuan_video": "euler"}
# Wan's defaults for what the user leaves unset (WanImageToVideoPipeline.__call__ and the scheduler config).
WAN_DEFAULT_STEPS = 50
WAN_DEFAULT_GUIDANCE = 5.0
WAN_DEFAULT_SHIFT = 3.0  # 480P; the 720P model card uses 5.0


@dataclass
class SamplerSettings:
    steps: int = WAN_DEFAULT_STEPS
    guidance: float = WAN_DEFAULT_GUIDANCE
    shift: float = WAN_DEFAULT_SHIFT
    scheduler: str = "unipc"
    step_cache: bool = False
    step_cache_threshold: float = 0.05


def base_scheduler_config(ckpt_path: str | Path | None) -> dict:
    """The model's scheduler config: `<ckpt>/scheduler/scheduler_config.json` if present, else Wan's."""
    path = Path(ckpt_path) / "scheduler" / "scheduler_config.json" if ckpt_path else None
    if path is not None and path.is_file():
        return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    return dict(WAN_SCHEDULER)


def model_scheduler_config(model_type: str, ckpt_path: str | Path | None) -> dict:
    """`base_scheduler_config` with the family's own fallback when the folder has no scheduler config."""
    path = Path(ckpt_path) / "scheduler" / "scheduler_config.json" if ckpt_path else None
    if model_type == "hunyuan_video" and not (path is not None and path.is_file()):
        return dict(HUNYUAN_SCHEDULER)
    return base_scheduler_config(ckpt_path)


def default_shift(config: dict) -> float:
    """The flow shift a scheduler config implies (UniPC's `flow_shift`, FlowMatchEuler's `shift`)."""
    return float(config.get("flow_shift", config.get("shift", WAN_DEFAULT_SHIFT)))


def make_scheduler(name: str, shift: float, base_config: dict | None = None) -> SchedulerMixin:
    """UniPC with flow sigmas (the model's config, `flow_shift` = shift) or flow-matching Euler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    base = dict(WAN_SCHEDULER if base_config is None else base_config)
    if name == "unipc":
        if "use_flow_sigmas" not in base:  # another scheduler's config (HunyuanVideo ships FlowMatchEuler's)
            base = {**WAN_SCHEDULER, "num_train_timesteps": base.get("num_train_timesteps", 1000)}
        return UniPCMultistepScheduler.from_config({**base, "flow_shift": float(shift)})
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=base.get("num_train_timesteps", 1000),
                                               shift=float(shift))
    raise ValueError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULERS)}")


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Float32 Gaussian noise as the diffusers pipeline draws it for `generator=torch.Generator().manual_seed(seed)`:
    on the CPU, then moved, so a seed gives the same start on every device."""
    from diffusers.utils.torch_utils import randn_tensor

    generator = torch.Generator("cpu").manual_seed(int(seed))
    return randn_tensor(shape, generator=generator, device=torch.device(device), dtype=torch.float32)


def latent_shape(model: nn.Module, cond: torch.Tensor) -> tuple[int, ...]:
    """Noise shape: the transformer's output channels on the conditioning's latent grid."""
    channels = int(model.config.out_channels)
    return (cond.shape[0], channels, *cond.shape[2:])


@contextmanager
def first_block_cache(model: nn.Module, enabled: bool, threshold: float) -> Iterator[None]:
    """diffusers' first-block cache on `model` for one generation: when the first block's output changes by
    less than `threshold` (relative mean absolute change) since the last full pass of the same context, the
    other blocks are skipped and their cached residual reused. Fresh state per generation."""
    if not enabled:
        yield
        return
    from diffusers.hooks import FirstBlockCacheConfig

    if not hasattr(model, "enable_cache"):
        raise ValueError(f"{type(model).__name__} has no diffusers cache support; run without step caching")
    model.enable_cache(FirstBlockCacheConfig(threshold=float(threshold)))
    try:
        yield
    finally:
        model.disable_cache()


def _context(model: nn.Module, name: str):
    # Separate cache state per pass: cond and uncond see different text, so their block outputs differ.
    return model.cache_context(name) if hasattr(model, "cache_context") else nullcontext()


@torch.no_grad()
def sample(
    adapter: ModelAdapter, cond: Conditioning, negative_text: torch.Tensor | Conditioning | None,
    settings: SamplerSettings, seed: int, base_config: dict | None = None, progress: bool = True,
) -> torch.Tensor:
    """Denoise to clean latents [B, C, t, h, w] (float32). `cond` holds the prompt embedding; `negative_text`
    the negative prompt's embedding, or its whole conditioning for families with more text tensors (the same
    image features and extra channels are used), required when guidance > 1."""
    model = adapter.load_transformer()
    device = adapter.device
    guided = settings.guidance > 1.0
    if guided and negative_text is None:
        raise ValueError("guidance > 1 needs the negative prompt embedding")
    cond = cond.to(device)
    uncond = None
    if guided:
        negative = negative_text if isinstance(negative_text, Conditioning) else Conditioning(None, negative_text)
        uncond = cond.with_text(negative.to(device))
    scheduler = make_scheduler(settings.scheduler, settings.shift, base_config)
    sigmas = adapter.scheduler_sigmas(settings.steps) if settings.scheduler == "euler" else None
    if sigmas is not None:  # the family's reference pipeline spaces the Euler sigmas itself (HunyuanVideo)
        scheduler.set_timesteps(sigmas=sigmas, device=device)
    else:
        scheduler.set_timesteps(settings.steps, device=device)
    extra = cond.cond.to(device=device, dtype=torch.float32)
    latents = adapter.initial_latents(initial_noise(latent_shape(model, cond.cond), seed, device), extra)
    bar = tqdm(total=len(scheduler.timesteps), desc="denoise", unit="step", disable=not progress, dynamic_ncols=True)
    with first_block_cache(model, settings.step_cache, settings.step_cache_threshold), bar:
        for t in scheduler.timesteps:
            model_input = adapter.transformer_input(latents, extra)
            timestep = t.expand(latents.shape[0])
            with _context(model, "cond"):
                pred = adapter.predict(model_input, timestep, cond)
            if guided:
                with _context(model, "uncond"):
                    pred_uncond = adapter.predict(model_input, timestep, uncond)
                pred = pred_uncond + settings.guidance * (pred - pred_uncond)
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
            bar.update()
    return latents
