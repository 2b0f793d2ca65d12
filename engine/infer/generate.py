"""infer.py's work: resolve the LoRAs, build the inference sample, encode once, sample, decode.

Same adapter, sample builder, packing and encode cache as training. The order keeps one large model
resident at a time: the encoders run (through the cache) and are freed, then the transformer loads with
the LoRAs applied, samples, and is freed before the VAE decodes.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from config.errors import UserError
from config.progress import Progress, as_progress, report
from config.schema import Config
from datasets.job import Job, inference_sample_for, load_job
from datasets.preview import to_uint8
from datasets.samples import Sample
from datasets.windows import is_long
from engine.encode.cache import EncodeCache, fingerprint
from engine.encode.samples import EncodedSample
from engine.infer.sampler import SamplerSettings, default_shift
from engine.infer.sampler import sample as run_sampler
from models.base import Conditioning, ModelAdapter
from models.family import Expert
from models.registry import family, make_adapter


class LoraArgumentError(UserError):
    """A malformed --lora argument."""


@dataclass
class LoraSpec:
    path: Path
    weight: float = 1.0
    expert: str | None = None  # the expert it goes into; None: told from the file (models.lora.lora_expert)

    def describe(self) -> str:
        return (f"{self.expert}=" if self.expert else "") + f"{self.path} (weight {self.weight:g})"


_EXPERT_PREFIX = re.compile(r"([a-z][a-z0-9_]*)=(.+)")


def parse_lora_arg(text: str) -> LoraSpec:
    """`PATH`, `PATH:WEIGHT` or `EXPERT=PATH[:WEIGHT]` (for a model with several experts, a file that does not say
    which it is for: `high_noise=adapter_model.safetensors`). A suffix that is not a number is part of the path when
    it looks like one (e.g. `C:\\lora.safetensors`, or an existing file with a colon in its name); otherwise the
    weight is wrong."""
    if not text:
        raise LoraArgumentError("--lora needs a path, e.g. --lora runs/edit/<run>/lora.safetensors:0.8")
    found = _EXPERT_PREFIX.fullmatch(text)
    if found and not Path(text).expanduser().exists():
        spec = parse_lora_arg(found[2])
        return LoraSpec(spec.path, spec.weight, found[1])
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            weight = float(tail)
        except ValueError:
            weight = None
        if weight is not None and math.isfinite(weight):
            return LoraSpec(Path(path).expanduser().resolve(), weight)
        looks_like_path = any(c in tail for c in "/\\") or tail.endswith(".safetensors")
        if weight is not None or not (looks_like_path or Path(text).expanduser().exists()):
            what = "not a finite number" if weight is not None else "not a number"
            raise LoraArgumentError(f"--lora {text}: the weight {tail!r} is {what}; use PATH:WEIGHT, e.g. "
                                    f"--lora {path}:0.8 (or the path alone for weight 1)")
    return LoraSpec(Path(text).expanduser().resolve())


def newest_lora(output_dir: str | Path, name: str) -> Path | None:
    """The most recently written `*.safetensors` directly in a run folder `output_dir/name/<run>/`."""
    found = [p for p in (Path(output_dir) / name).glob("*/*.safetensors") if p.is_file()]
    return max(found, key=lambda p: (p.stat().st_mtime_ns, str(p))) if found else None


def resolve_loras(cfg: Config, given: list[LoraSpec] | None, use_none: bool = False) -> tuple[list[LoraSpec], str]:
    """The LoRAs to apply and a one-line note of where they came from.

    Precedence: --no-lora, then --lora (repeatable), then inference.lora, then the newest LoRA of this
    job's training runs; none found -> the base model alone (the note says so: it is rarely wanted)."""
    if use_none:
        return [], "no LoRA: base model only"
    if given:
        return given, "LoRA: " + ", ".join(s.describe() for s in given)
    if cfg.inference.lora:
        spec = LoraSpec(Path(cfg.inference.lora), cfg.inference.lora_weight)
        return [spec], f"LoRA (inference.lora): {spec.describe()}"
    runs = Path(cfg.output_dir) / cfg.name
    found = newest_lora(cfg.output_dir, cfg.name)
    if found is None:
        return [], (f"warning: no LoRA given and none found under {runs}/*/ (train first, or pass --lora): "
                    "generating with the base model only")
    specs = [LoraSpec(p, cfg.inference.lora_weight) for p in expert_siblings(found, family(cfg.model.type).experts)]
    return specs, "LoRA: newest of this job's runs: " + ", ".join(s.describe() for s in specs)


def expert_siblings(found: Path, experts: Sequence[Expert]) -> list[Path]:
    """A training run's LoRA file and, for a family with several experts, the same file of every other expert
    (`lora_high_noise.safetensors` -> also `lora_low_noise.safetensors`), where they exist."""
    suffixes = [e.suffix for e in experts if e.suffix]
    if len(experts) == 1 or not suffixes:
        return [found]
    base = next((found.stem[: -len(x)] for x in suffixes if found.stem.endswith(x)), found.stem)
    return [p for x in suffixes if (p := found.with_name(f"{base}{x}{found.suffix}")).is_file()] or [found]


@dataclass
class Request:
    """Everything that decides the frames, resolved (no 'use the default' values left)."""

    preset: str
    prompt: str
    negative_prompt: str
    seed: int
    sampler: SamplerSettings
    loras: list[LoraSpec] = field(default_factory=list)


def build_request(cfg: Config, loras: list[LoraSpec], prompt: str | None = None) -> Request:
    """The request a config asks for; 0 / empty settings become the model's defaults."""
    inf, spec = cfg.inference, family(cfg.model.type)
    shift = inf.shift or default_shift(spec.scheduler_config_for(cfg.model.ckpt_path))
    scheduler = spec.scheduler if inf.scheduler == "auto" else inf.scheduler
    # A second expert's own guidance (diffusers' guidance_scale_2); the loader resolved 0 to the model's default.
    second = {spec.experts[1].name: inf.guidance_2 or inf.guidance} if len(spec.experts) > 1 else {}
    sampler = SamplerSettings(steps=inf.steps, guidance=inf.guidance, shift=shift, scheduler=scheduler,
                              step_cache=inf.step_cache, step_cache_threshold=inf.step_cache_threshold,
                              expert_guidance=second)
    return Request(preset=inf.mask_preset, prompt=prompt or "",
                   negative_prompt=inf.negative_prompt or spec.negative_prompt,
                   seed=cfg.seed, sampler=sampler,
                   loras=list(loras))


@dataclass
class Generation:
    video: torch.Tensor  # float [3, T, H, W] in [-1, 1], as decoded
    frames: np.ndarray  # uint8 [T, H, W, 3]
    job: Job
    sample: Sample
    input_digest: str
    seconds: dict[str, float]
    weights_identity: str
    device: str

    @property
    def generate_mask(self) -> np.ndarray:
        """bool [T, H, W]: where the model generated (m_condition == 0)."""
        return self.sample.m_condition[0].numpy() < 0.5

    @property
    def background(self) -> np.ndarray:
        """The kept pixels' reference: the source with frame 0 replaced by the edited frame."""
        frames = self.job.frames.copy()
        if self.job.edited_first is not None:
            frames[0] = self.job.edited_first
        return frames


@dataclass
class Inputs:
    job: Job
    sample: Sample
    digest: str  # what the transformer is conditioned on (frames, mask, CLIP image, prompt, packing)


def load_inputs(cfg: Config, request: Request) -> Inputs:
    """Everything that can be wrong with the user's input, checked before any model loads."""
    load_lora = family(cfg.model.type).formats().load_lora
    if request.preset == "reference":
        raise UserError("mask preset 'reference' is a single-frame training sample (stage 2); "
                        "choose loraedit, i2v, selective, all or none for generation")
    for spec in request.loras:  # missing, unreadable, unknown layout, another family: before any model loads
        load_lora(spec.path)
    job = load_job(cfg, edited=True)
    sample = inference_sample_for(cfg, job, request.preset)
    if request.prompt:
        sample = dataclasses.replace(sample, prompt=request.prompt)
    digest = fingerprint("inference", sample.v_condition, sample.m_condition, sample.clip_image, sample.prompt,
                         cfg.data.latent_mask)
    if is_long(cfg.data.frames, cfg.data.window):  # chained windows (engine.infer.chain): their settings count too
        i = cfg.inference
        digest = fingerprint(digest, "windows", cfg.data.window, i.window_overlap, i.window_anchor)
    return Inputs(job, sample, digest)


def apply_loras(adapter: ModelAdapter, loras: list[LoraSpec]) -> None:
    """Each LoRA as its own adapter, stacked, strength folded in (models.lora), on the expert it is for (the only
    one of most families); errors name the file."""
    from models.lora import load_lora_weights_into, lora_expert
    from models.lora_files import LoraFormatError, read_lora_file

    experts = adapter.experts()
    for i, spec in enumerate(loras):
        try:
            if spec.expert is not None:
                if spec.expert not in [e.name for e in experts]:
                    raise LoraArgumentError(f"--lora {spec.expert}={spec.path}: {adapter.spec.title} has no expert "
                                            f"{spec.expert!r}; its experts: {', '.join(e.name for e in experts)}")
                expert = adapter.expert(spec.expert)
            else:
                expert = lora_expert(spec.path, read_lora_file(spec.path)[1] if len(experts) > 1 else {}, experts)
            load_lora_weights_into(adapter.load_transformer(expert=expert.name), spec.path, spec.weight,
                                   adapter_name=f"lora{i}")
        except LoraFormatError as e:
            raise e if str(spec.path) in str(e) else type(e)(f"{spec.path}: {e}") from None


def sample_latents(cfg: Config, adapter: ModelAdapter, request: Request, encoded: EncodedSample,
                   negative: Conditioning | None, progress: Progress | None = None) -> torch.Tensor:
    """The request's latents from its encoded sample with the adapter's loaded transformer(s): generate()'s
    sampling, also used by training previews on the transformer being trained."""
    return run_sampler(adapter, encoded.conditioning(), negative, request.sampler, request.seed,
                       family(cfg.model.type).scheduler_config_for(cfg.model.ckpt_path), progress)


def generate(cfg: Config, request: Request, device: torch.device | None = None, progress: Progress | None = None,
             inputs: Inputs | None = None) -> Generation:
    """Run one generation; `inputs` from `load_inputs` if the caller already checked them. `progress` hears of the
    encoders' items, every denoising step ("denoise") and the decode."""
    from engine.encode.samples import encode_with_negative

    if is_long(cfg.data.frames, cfg.data.window):  # engine.infer.chain sits above this module
        raise UserError(f"{cfg.source or 'config'}: a long job (data.frames {cfg.data.frames} > data.window "
                        f"{cfg.data.window}) is generated window by window: engine.infer.chain.generate_job")
    progress = as_progress(progress)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    inputs = inputs or load_inputs(cfg, request)
    job, sample = inputs.job, inputs.sample
    adapter = make_adapter(cfg.model, device)
    identity = adapter.weights_identity()
    cache = EncodeCache(cfg.data.cache_dir)
    encoded, negative = encode_with_negative(adapter, sample, cache, cfg.data.latent_mask,
                                             request.negative_prompt if request.sampler.guided(adapter.experts())
                                             else None, progress)
    adapter.unload()  # encoders out before the transformer comes in
    seconds["encode"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    several = len(adapter.experts()) > 1
    for expert in adapter.experts():  # several: each waits in host RAM until its timesteps come (use_expert)
        adapter.load_transformer("cpu" if several else None, expert=expert.name)
    apply_loras(adapter, request.loras)
    seconds["load"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    latents = sample_latents(cfg, adapter, request, encoded, negative, progress)
    seconds["denoise"] = time.perf_counter() - t2
    adapter.unload_transformers()

    t3 = time.perf_counter()
    report(progress, "decode", message="decoding the latents")
    video = adapter.decode_latents(latents)[0].float().cpu()
    adapter.unload()
    seconds["decode"] = time.perf_counter() - t3
    if video.shape[1] != job.frames.shape[0]:
        raise RuntimeError(f"decoded {video.shape[1]} frames for a {job.frames.shape[0]}-frame job")
    return Generation(video, to_uint8(video.numpy()), job, sample, inputs.digest, seconds, identity, str(device))
