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

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from config.progress import Progress, as_progress, report
from models.base import Conditioning, ModelAdapter
from models.family import Expert, flow_shift
from models.registry import DEFAULT_FAMILY, family

if TYPE_CHECKING:  # diffusers loads lazily: infer.py reports bad input before paying for it
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

SCHEDULERS = ("unipc", "euler")
# diffusers' UniPC with flow sigmas (its other settings are UniPC's defaults, which are the ones Wan publishes), for
# `scheduler = "unipc"` on a model whose own config is another scheduler's (HunyuanVideo ships FlowMatchEuler's).
FLOW_UNIPC = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
# What a config that says nothing asks for (the config's defaults: Wan's, as WanImageToVideoPipeline.__call__).
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 5.0


@dataclass
class SamplerSettings:
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    shift: float = 3.0
    scheduler: str = "unipc"
    step_cache: bool = False
    step_cache_threshold: float = 0.05
    expert_guidance: dict[str, float] = field(default_factory=dict)  # an expert's own scale, where it has one

    def guidance_for(self, expert: Expert) -> float:
        return self.expert_guidance.get(expert.name, self.guidance)

    def guided(self, experts: Sequence[Expert]) -> bool:
        """Whether any of the experts runs a negative pass (and so needs the negative prompt encoded)."""
        return any(self.guidance_for(e) > 1.0 for e in experts)


def base_scheduler_config(ckpt_path: str | Path | None, model_type: str = DEFAULT_FAMILY) -> dict:
    """The model's scheduler config: `<ckpt>/scheduler/scheduler_config.json` if present, else the family's."""
    return family(model_type).scheduler_config_for(ckpt_path)


def default_shift(config: dict) -> float:
    """The flow shift a scheduler config implies (UniPC's `flow_shift`, FlowMatchEuler's `shift`)."""
    return flow_shift(config)


def make_scheduler(name: str, shift: float, base_config: dict | None = None) -> SchedulerMixin:
    """UniPC with flow sigmas (the model's config, `flow_shift` = shift) or flow-matching Euler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    base = base_scheduler_config(None) if base_config is None else dict(base_config)
    if name == "unipc":
        if "use_flow_sigmas" not in base:  # another scheduler's config (HunyuanVideo ships FlowMatchEuler's)
            base = {**FLOW_UNIPC, "num_train_timesteps": base.get("num_train_timesteps", 1000)}
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
    settings: SamplerSettings, seed: int, base_config: dict | None = None, progress: Progress | None = None,
) -> torch.Tensor:
    """Denoise to clean latents [B, C, t, h, w] (float32). `cond` holds the prompt embedding; `negative_text`
    the negative prompt's embedding, or its whole conditioning for families with more text tensors (the same
    image features and extra channels are used), required when guidance > 1. Each step runs the expert serving its
    timestep (one for most families), with that expert's guidance; `progress` hears of every step ("denoise")."""
    progress = as_progress(progress)
    experts = adapter.experts()
    scales = {e.name: settings.guidance_for(e) for e in experts}
    device = adapter.device
    if settings.guided(experts) and negative_text is None:
        raise ValueError("guidance > 1 needs the negative prompt embedding")
    cond = cond.to(device)
    uncond = None
    if negative_text is not None:
        negative = negative_text if isinstance(negative_text, Conditioning) else Conditioning(None, negative_text)
        uncond = cond.with_text(negative.to(device))
    scheduler = make_scheduler(settings.scheduler, settings.shift, base_config)
    sigmas = adapter.scheduler_sigmas(settings.steps) if settings.scheduler == "euler" else None
    if sigmas is not None:  # the family's reference pipeline spaces the Euler sigmas itself (HunyuanVideo)
        scheduler.set_timesteps(sigmas=sigmas, device=device)
    else:
        scheduler.set_timesteps(settings.steps, device=device)
    extra = cond.cond.to(device=device, dtype=torch.float32)
    model = adapter.use_expert(adapter.expert_for(scheduler.timesteps[0]).name)
    latents = adapter.initial_latents(initial_noise(latent_shape(model, cond.cond), seed, device), extra)
    total = len(scheduler.timesteps)
    report(progress, "denoise", 0, total)
    with ExitStack() as caches:
        cached: set[str] = set()
        for i, t in enumerate(scheduler.timesteps, 1):
            expert = adapter.expert_for(t)
            model = adapter.use_expert(expert.name)
            if expert.name not in cached:  # each expert's own step cache, for this generation
                caches.enter_context(first_block_cache(model, settings.step_cache, settings.step_cache_threshold))
                cached.add(expert.name)
            model_input = adapter.transformer_input(latents, extra)
            timestep = t.expand(latents.shape[0])
            which = {"expert": expert.name} if len(experts) > 1 else {}  # one expert: the plain call
            with _context(model, "cond"):
                pred = adapter.predict(model_input, timestep, cond, **which)
            guidance = scales[expert.name]
            if guidance > 1.0:
                with _context(model, "uncond"):
                    pred_uncond = adapter.predict(model_input, timestep, uncond, **which)
                pred = pred_uncond + guidance * (pred - pred_uncond)
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
            report(progress, "denoise", i, total)
    return latents
