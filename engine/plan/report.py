"""The plan: per-device memory and FLOPs of a job's training step (or sampling), times on named GPUs.

Memory per device = the traced step (resident weights, inputs, activations, copies of swapped-in blocks,
LoRA gradients; engine.plan.steps) + the optimizer state, which is not traced (sized here: AdamW keeps two
states in the LoRA's dtype; 8-bit AdamW one byte each) + one set of foreach temporaries during the update.
With pipeline stages, DeepSpeed's schedule keeps up to (stages - stage) micro-batches' forward state alive
on a stage. Not included: the CUDA context and kernels' workspaces (about 0.5-1 GiB per GPU) and the caching
allocator's fragmentation.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

from config.schema import Config
from datasets.windows import chain_windows, training_windows
from engine.plan.gpus import GPUS, GiB, Gpu, seconds
from engine.plan.model import ModelSpec, job_size
from engine.plan.steps import StepTrace, composed_step, trace_sampling_step, trace_training_step, trace_vae
from models.registry import family


@dataclass
class Memory:
    """Bytes on the busiest device."""

    weights: int
    offloaded: int
    gradients: int
    optimizer_state: int
    activations: int  # activation peak: inputs, saved and recomputed activations, swapped-in block copies
    total: int


@dataclass
class TrainingPlan:
    model: ModelSpec
    frames: int
    height: int
    width: int
    settings: dict[str, object]
    frozen_params: int
    trainable_params: int
    memory: Memory
    flops_per_step: int  # one optimizer step of one replica (all micro-batches, all stages)
    attention_flops_per_step: int
    tokens: int
    steps: int  # optimizer steps of the job (stage 1 + stage 2)
    job_flops: int
    offloaded_per_step: int  # bytes copied host -> device per step (block swap)
    stages: int
    micro_batches: int
    trace_seconds: float
    notes: list[str] = field(default_factory=list)


def optimizer_bytes(cfg: Config, trainable: int) -> tuple[int, int]:
    """(state, step temporaries) of the LoRA's optimizer."""
    from models.dtypes import dtype_from_name

    size = dtype_from_name(cfg.adapter.dtype).itemsize
    if cfg.optimizer.type == "adamw8bit":
        return 2 * trainable + trainable // 256 * 8, 0  # one byte per state + block-wise absmax
    return 2 * trainable * size, trainable * size


def device_memory(trace: StepTrace, cfg: Config, in_flight: int = 1) -> Memory:
    state, temporaries = optimizer_bytes(cfg, trace.trainable_params)
    extra = (in_flight - 1) * (trace.after_forward - trace.weights)
    peak = max(trace.peak + extra, trace.weights + trace.grads + temporaries) + state
    activations = trace.peak + extra - trace.weights - trace.grads
    return Memory(trace.weights, trace.offloaded, trace.grads, state, activations, peak)


def step_shape(cfg: Config, spec: ModelSpec) -> tuple[int, int, int]:
    """(frames, height, width) of one training sample: the window, or a short clip in low-cost mode."""
    frames, height, width = job_size(cfg, spec)
    if cfg.training.low_cost:
        frames = min(frames, cfg.training.clip_frames)
    return frames, height, width


def settings_of(cfg: Config) -> dict[str, object]:
    t = cfg.training
    return {"training.activation_checkpointing": t.activation_checkpointing,
            "training.blocks_to_swap": t.blocks_to_swap,
            "model.transformer_dtype": cfg.model.transformer_dtype or cfg.model.dtype,
            "adapter.dtype": cfg.adapter.dtype, "training.low_cost": t.low_cost, "data.frames": cfg.data.frames}


def plan_training(cfg: Config, spec: ModelSpec, composed: bool = False) -> TrainingPlan:
    """The plan of `cfg`'s training. `composed`: compose the step from a few blocks (fast, single stage;
    used to search settings) instead of tracing every block and stage."""
    t0 = time.perf_counter()
    t = cfg.training
    frames, height, width = step_shape(cfg, spec)
    if composed and t.pipeline_stages > 1:
        raise ValueError("composed plans are for one pipeline stage")
    if t.pipeline_stages == 1:
        fn = composed_step if composed else trace_training_step
        traces = [fn(spec, cfg, frames, height, width, checkpointing=t.activation_checkpointing,
                     blocks_to_swap=t.blocks_to_swap)]
    else:
        traces = [trace_training_step(spec, cfg, frames, height, width, stage=s) for s in range(t.pipeline_stages)]
    micro = t.gradient_accumulation_steps
    memories = [device_memory(tr, cfg, min(len(traces) - i, micro)) for i, tr in enumerate(traces)]
    memory = max(memories, key=lambda m: m.total)
    per_micro = sum(tr.flops for tr in traces)
    step_flops = per_micro * micro
    steps, job_flops = t.steps, t.steps * step_flops
    notes = []
    if cfg.data.reference_frames and t.reference_steps:
        # Stage 2 mixes single edited frames (reference_ratio of the micro-batches) with clip samples.
        one = composed_step(spec, plan_with(cfg, **{"training.pipeline_stages": 1}), 1, height, width,
                            checkpointing=t.activation_checkpointing, blocks_to_swap=0).flops * micro
        steps += t.reference_steps
        job_flops += int(t.reference_steps * (t.reference_ratio * one + (1 - t.reference_ratio) * step_flops))
        notes.append(f"stage 2: {t.reference_steps} steps, {t.reference_ratio:.0%} of them on single frames")
    if t.low_cost:
        notes.append(f"low-cost mode: each step trains one {frames}-frame clip of the {cfg.data.frames}-frame window")
    elif cfg.data.window and cfg.data.frames > cfg.data.window:
        n = len(training_windows(cfg.data.frames, cfg.data.window, cfg.inference.window_overlap,
                                 t.random_windows, cfg.seed))
        notes.append(f"long job: each step trains one {frames}-frame window of the {cfg.data.frames}-frame clip "
                     f"({n} windows, each encoded once)")
    experts = family(spec.family).experts
    if len(experts) > 1:
        memory, note = _with_experts(cfg, experts, memory, max(tr.offloaded for tr in traces))
        notes.append(note)
    return TrainingPlan(
        model=spec, frames=frames, height=height, width=width, settings=settings_of(cfg),
        frozen_params=sum(tr.frozen_params for tr in traces),
        trainable_params=sum(tr.trainable_params for tr in traces), memory=memory, flops_per_step=step_flops,
        attention_flops_per_step=sum(tr.attention_flops for tr in traces) * micro,
        tokens=traces[0].tokens * t.micro_batch_size_per_gpu, steps=steps, job_flops=job_flops,
        offloaded_per_step=2 * max(tr.offloaded for tr in traces) * micro, stages=len(traces), micro_batches=micro,
        trace_seconds=time.perf_counter() - t0, notes=notes)


def _with_experts(cfg: Config, experts, memory: Memory, offloaded: int) -> tuple[Memory, str]:  # noqa: ANN001
    """A family with several experts: each trained expert has its own engine, so its resident weights (LoRA
    included) and optimizer state stay on the device between its steps, and its swapped blocks in host RAM; an
    expert model.experts leaves out is not loaded for training. The traced step is one expert's."""
    trained = [e for e in experts if not cfg.model.experts or e.name in cfg.model.experts]
    idle = len(trained) - 1
    memory = Memory(memory.weights * (1 + idle), memory.offloaded * len(trained), memory.gradients,
                    memory.optimizer_state * (1 + idle), memory.activations,
                    memory.total + idle * (memory.weights + memory.optimizer_state))
    names = ", ".join(e.name for e in experts)
    host = f"; host RAM holds their swapped blocks ({gib(offloaded * len(trained))})" if offloaded else ""
    return memory, (f"{len(experts)} experts ({names}), {len(trained)} trained: a step trains the one its timestep "
                    f"belongs to; weights and optimizer state are every trained expert's, activations one "
                    f"expert's{host}")


def step_seconds(plan: TrainingPlan, gpu: Gpu, utilization: float) -> float:
    """Compute time of one step on `gpu` (1F1B pipeline: (micro-batches + stages - 1) stage slots), or the
    block-swap copies over the host link when they take longer (they overlap compute)."""
    per_slot = plan.flops_per_step / plan.micro_batches / plan.stages
    compute = seconds(per_slot * (plan.micro_batches + plan.stages - 1), gpu, utilization)
    return max(compute, plan.offloaded_per_step / (gpu.host_gbps * 1e9))


# ---------------------------------------------------------------------------------------------- text


def gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / 2**20:.1f} MiB"


def tflop(n: float) -> str:
    if n >= 1e16:
        return f"{n / 1e15:,.1f} PFLOP"
    return f"{n / 1e12:,.0f} TFLOP" if n >= 1e13 else f"{n / 1e9:,.2f} GFLOP"


def _count(n: float) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def describe_settings(s: dict[str, object], blocks: int) -> str:
    parts = ["checkpointing " + ("on" if s["training.activation_checkpointing"] else "off"),
             f"{s['training.blocks_to_swap']} of {blocks} blocks swapped", f"{s['model.transformer_dtype']} weights",
             f"LoRA in {s['adapter.dtype']}"]
    if s["training.low_cost"]:
        parts.append("low-cost clips")
    return ", ".join(parts)


def gpu_table(rows: list[tuple[Gpu, float, float | None]], peak: int, utilization: float, job_label: str) -> list[str]:
    """rows: (gpu, step seconds, job seconds or None)."""
    lines = [f"{'GPU':<12} {'bf16 TFLOPS':>11} {'fp8':>6} {'memory':>8} {'fits':>5} "
             f"{f'step @{utilization:.0%}':>11} {job_label:>12}"]
    for gpu, step, job in rows:
        fits = "?" if not gpu.memory_gib else "yes" if peak + GiB <= gpu.memory_gib * GiB else "no"
        fp8 = f"{gpu.fp8_tflops:.0f}" if gpu.fp8_tflops else "-"
        mem = f"{gpu.memory_gib:.0f} GiB" if gpu.memory_gib else "?"
        lines.append(f"{gpu.name:<12} {gpu.bf16_tflops:>11.0f} {fp8:>6} {mem:>8} {fits:>5} {_duration(step):>11} "
                     f"{_duration(job) if job is not None else '-':>12}")
    return lines


def render_training(plan: TrainingPlan, gpus: list[Gpu], utilization: float) -> str:
    m, spec = plan.memory, plan.model
    swapped = plan.settings["training.blocks_to_swap"]
    lines = [
        f"Training plan: {spec.name} ({spec.family}), {plan.frames} frames at {plan.width}x{plan.height} -> "
        f"{plan.tokens:,} tokens per micro-batch",
        f"  settings: {describe_settings(plan.settings, spec.blocks)}; {plan.micro_batches} micro-batch(es) per step, "
        f"{plan.stages} pipeline stage(s)",
        "",
        f"  {'parameters':<20} {_count(plan.frozen_params)} frozen, {_count(plan.trainable_params)} trainable (LoRA)",
        f"  {'weights':<20} {gib(m.weights)} per GPU" + (f" (+ {gib(m.offloaded)} of {swapped} swapped blocks in "
                                                         "host RAM)" if m.offloaded else ""),
        f"  {'LoRA gradients':<20} {gib(m.gradients)}",
        f"  {'optimizer state':<20} {gib(m.optimizer_state)}",
        f"  {'activation peak':<20} {gib(m.activations)} (inputs, saved + recomputed activations"
        + (", swapped-in blocks)" if swapped else ")"),
        f"  {'total peak per GPU':<20} {gib(m.total)} (+ CUDA context, ~0.5-1 GiB)",
        f"  {'FLOPs per step':<20} {tflop(plan.flops_per_step)} (attention {tflop(plan.attention_flops_per_step)})",
        f"  {'job':<20} {plan.steps} steps, {tflop(plan.job_flops)}",
    ]
    lines += [f"  note: {n}" for n in plan.notes]
    rows = [(g, step_seconds(plan, g, utilization),
             step_seconds(plan, g, utilization) * plan.job_flops / max(plan.flops_per_step, 1)) for g in gpus]
    lines += ["", *("  " + r for r in gpu_table(rows, m.total, utilization, f"job ({plan.steps} st)"))]
    lines.append(f"  (planned in {plan.trace_seconds:.0f} s; a GPU 'fits' with 1 GiB left for the CUDA context)")
    return "\n".join(lines)


def encoder_phase(spec: ModelSpec, cfg: Config, decode: bool = False) -> str:
    """The encode phase (or, with `decode`, the final VAE decode): each encoder is loaded, run over the job and
    freed before the next one, and all of them are freed before the transformer loads. Text and image encoders
    are sized by their weights (their activations, for 512 tokens or one image, are small); the VAE is traced."""
    from models.dtypes import dtype_from_name

    frames, height, width = job_size(cfg, spec)
    vae = trace_vae(spec, frames, height, width)
    if decode:
        if vae is None:
            return ""
        return f"VAE decode (after the transformer is freed): {gib(vae.weights + vae.decode_peak)} peak"
    sizes = {"text_encoder": dtype_from_name(cfg.model.dtype).itemsize, "image_encoder": 4, "vae": 4}
    need = {name: int(n * sizes.get(name, 4)) for name, n in spec.encoders.items()}
    if vae is not None:
        need["vae"] = vae.weights + vae.encode_peak
    if not need:
        return ""
    parts = ", ".join(f"{name.replace('_', ' ')} {gib(n)}" for name, n in need.items())
    return (f"Encode phase (before training; one encoder at a time, freed before the transformer loads): peak "
            f"{gib(max(need.values()))} ({parts}; the VAE traced at {frames} frames, the others by weights)")


def plan_with(cfg: Config, **changes: object) -> Config:
    """A copy of cfg with dotted keys changed ("training.blocks_to_swap" = 8)."""
    out = copy.deepcopy(cfg)
    for key, value in changes.items():
        section, name = key.split(".")
        setattr(getattr(out, section), name, value)
    return out


def default_gpus(extra: list[Gpu]) -> list[Gpu]:
    return [*GPUS, *extra]


def render_sampling(spec: ModelSpec, cfg: Config, gpus: list[Gpu], utilization: float) -> tuple[str, int]:
    """The inference plan's text and its peak bytes per GPU."""
    frames, height, width = job_size(cfg, spec)
    tr = trace_sampling_step(spec, cfg, frames, height, width)
    inf = cfg.inference
    windows = len(chain_windows(cfg.data.frames, frames, inf.window_overlap)) if cfg.data.window else 1
    passes = inf.steps * (2 if inf.guidance > 1 else 1) * windows
    total = tr.flops * passes
    lines = [
        f"Inference plan: {spec.name} ({spec.family}), {frames} frames at {width}x{height} -> {tr.tokens:,} tokens",
        f"  settings: {inf.steps} steps, guidance {inf.guidance:g} ({passes} transformer passes), "
        f"{cfg.model.transformer_dtype or cfg.model.dtype} weights, LoRA r{cfg.adapter.rank} unmerged",
        "",
        f"  {'parameters':<20} {_count(tr.frozen_params)} (LoRA included)",
        f"  {'weights':<20} {gib(tr.weights)}",
        f"  {'activation peak':<20} {gib(tr.peak - tr.weights)}",
        f"  {'total peak per GPU':<20} {gib(tr.peak)} (+ CUDA context, ~0.5-1 GiB; the VAE decode runs after the "
        "transformer is freed)",
        f"  {'FLOPs per pass':<20} {tflop(tr.flops)} (attention {tflop(tr.attention_flops)})",
        f"  {'FLOPs in total':<20} {tflop(total)}",
    ]
    if windows > 1:
        lines.append(f"  long job: {cfg.data.frames} frames as {windows} chained windows of {frames} (overlap "
                     f"{inf.window_overlap}): memory is one window's, passes and time are all windows'; the "
                     "transformer stays loaded while each window's VAE encode and decode run (add the VAE's peak)")
    if inf.step_cache:
        lines.append("  note: step_cache skips blocks on some steps; the totals assume every pass runs")
    rows = [(g, seconds(tr.flops, g, utilization), seconds(total, g, utilization)) for g in gpus]
    lines += ["", *("  " + r for r in gpu_table(rows, tr.peak, utilization, "all steps"))]
    lines.append(f"  (planned in {tr.seconds:.0f} s; 'step' is one transformer pass)")
    decode = encoder_phase(spec, cfg, decode=True)
    return "\n".join([*lines, *(["", decode] if decode else [])]), tr.peak
