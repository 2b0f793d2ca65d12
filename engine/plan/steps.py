"""One training step and one sampling step of a job, traced on the full-size model on the meta device.

The step is train.py's: the adapter's layer list (with `GradBoundary` between pipeline stages), each layer
that has parameters wrapped in DeepSpeed's `non_reentrant_checkpoint` as the trainer's `PipelineModule`
does with `activation_checkpoint_interval = 1`, a micro-batch drawn by the trainer's `BatchStream` (from
zero-filled cached inputs of the job's shapes), `pipeline_loss`, backward, and block swap by the real
`models.offload.enable_block_swap` (its masters, in a dtype no weight has so every move-in is a real copy,
stand for host memory and are not counted; the copies brought in for a block's turn are).

The optimizer is not traced (torch's AdamW reads its step counter with `.item()`, which meta tensors cannot
answer): its state and the temporaries of a foreach step are sized from the trainable parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from config.errors import UserError
from config.schema import Config
from engine.plan.model import InputShapes, ModelSpec, add_training_lora, build_transformer, weightless_adapter
from engine.plan.trace import LiveStorage, SimulatedDevice, attention_flops, flop_counter


@dataclass
class StepTrace:
    """Device memory (bytes) and FLOPs of one traced step on one device."""

    frozen_params: int
    trainable_params: int
    weights: int  # resident weight bytes at the start (LoRA included; offloaded masters not)
    lora_bytes: int
    inputs: int  # the micro-batch's inputs
    after_forward: int  # live after the forward (weights + inputs + saved activations)
    peak: int  # peak live bytes over forward and backward (weights and gradients included)
    grads: int  # gradient bytes at the end of backward
    offloaded: int  # frozen weight bytes kept off the device (block swap), moved in twice per micro-batch
    flops: int  # forward + backward (+ recomputation) of the traced layers
    attention_flops: int
    forward_flops: int
    tokens: int
    seconds: float  # how long the trace took


def has_parameters(layer: nn.Module) -> bool:
    return any(True for _ in layer.parameters())


def _run_layer(layer: nn.Module):  # noqa: ANN202
    """PipelineModule's exec_range_func for one layer: the tuple comes in unpacked, one element unwrapped.

    It enters `SimulatedDevice` itself because torch-function modes are not active inside backward, where
    the checkpoint recomputes the layer (dispatch modes, the tracker and the FLOP counter, are).
    """
    def run(*inputs):  # noqa: ANN002, ANN202
        with SimulatedDevice():
            return layer(inputs[0] if len(inputs) == 1 else inputs)
    return run


def encoded_sample(shapes: InputShapes, dtype: torch.dtype):
    """A cached sample of these shapes, zero-filled (what the encode cache would hand the trainer)."""
    from engine.encode.samples import EncodedSample

    def zeros(shape: tuple[int, ...] | None) -> torch.Tensor | None:
        return None if shape is None else torch.zeros(shape, dtype=dtype)

    return EncodedSample("plan", "video", zeros(shapes.latents), zeros(shapes.cond),
                         torch.zeros((1, *shapes.latents[1:])), zeros(shapes.text), zeros(shapes.image),
                         None if shapes.text_mask is None else torch.ones(shapes.text_mask), zeros(shapes.pooled))


def _micro_batch(adapter, shapes: InputShapes, batch: int) -> tuple[tuple, tuple]:
    """The trainer's BatchStream micro-batch (real, small: latents and embeddings), moved to the meta device."""
    from engine.train.batches import BatchStream, TimeSampling

    stream = BatchStream(adapter, {"video": [encoded_sample(shapes, torch.float32)]}, {"video": 1.0}, batch, 0, 0,
                         TimeSampling(), 1.0, "cpu")
    inputs, labels = next(stream)
    to_meta = lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t  # noqa: E731
    return tuple(map(to_meta, inputs)), tuple(map(to_meta, labels))


def stage_bounds(num_layers: int, trainable: list[int], stages: int) -> list[tuple[int, int]]:
    """DeepSpeed's partition_method="parameters": balanced by trainable parameter count per layer."""
    if stages == 1:
        return [(0, num_layers)]
    from deepspeed.runtime.utils import partition_balanced

    parts = partition_balanced(weights=trainable, num_parts=stages)
    return [(parts[i], parts[i + 1]) for i in range(stages)]


def trace_training_step(spec: ModelSpec, cfg: Config, frames: int, height: int, width: int, *,
                        checkpointing: bool | None = None, blocks_to_swap: int | None = None,
                        stage: int = 0, num_blocks: int | None = None) -> StepTrace:
    """Trace one micro-batch of train.py's step on pipeline stage `stage` of `training.pipeline_stages`
    (`num_blocks`: build the model with that many blocks instead of the config's, for `composed_step`)."""
    from deepspeed.runtime.activation_checkpointing.checkpointing import non_reentrant_checkpoint

    from engine.train.trainer import GradBoundary, pipeline_layers, pipeline_loss
    from models.offload import enable_block_swap

    t0 = time.perf_counter()
    t = cfg.training
    checkpointing = t.activation_checkpointing if checkpointing is None else checkpointing
    blocks_to_swap = t.blocks_to_swap if blocks_to_swap is None else blocks_to_swap
    shapes = spec.shapes(frames, height, width)
    if num_blocks is not None:
        spec = spec.with_blocks(num_blocks)
    model = build_transformer(spec, cfg)
    adapter = weightless_adapter(spec, model, cfg)
    torch.manual_seed(cfg.seed)
    lora = add_training_lora(adapter, model, cfg)
    # Experts share one architecture: one of them is traced (the others wait in host RAM: plan_training's note).
    layers = pipeline_layers(adapter, t.pipeline_stages, adapter.experts()[0].name)
    trainable = [sum(p.numel() for p in layer.parameters() if p.requires_grad) for layer in layers]
    start, end = stage_bounds(len(layers), trainable, t.pipeline_stages)[stage]
    inputs, labels = _micro_batch(adapter, shapes, t.micro_batch_size_per_gpu)
    if start > 0:  # this stage's input: the previous stages' output, computed without autograd
        with torch.no_grad(), SimulatedDevice():
            for layer in layers[:start]:
                inputs = layer(inputs)
        inputs = GradBoundary()(inputs)
    mine = layers[start:end]
    owned = {id(p) for layer in mine for p in layer.parameters()}
    tracker = LiveStorage()
    offloaded = 0
    if blocks_to_swap:
        try:
            swap = enable_block_swap(mine, blocks_to_swap, "meta", offload_device="meta", offload_dtype=torch.float64)
        except ValueError as e:  # as the trainer reports it
            raise UserError(f"training.blocks_to_swap = {blocks_to_swap}: {e}") from None
        slots = [s for block_slots in swap.slots.values() for s in block_slots]
        tracker.exclude(s.master for s in slots)
        offloaded = sum(s.master.numel() * s.dtype.itemsize for s in slots)
    tracker.track(p for layer in mine for p in layer.parameters())  # other stages' weights are elsewhere
    tracker.track(b for layer in mine for b in layer.buffers())
    weights = tracker.live
    tracker.track(x for x in (*inputs, *labels) if isinstance(x, torch.Tensor))
    inputs_bytes = tracker.live - weights
    counter = flop_counter()
    with SimulatedDevice(), tracker, counter:
        x = inputs
        for layer in mine:
            x = non_reentrant_checkpoint(_run_layer(layer), *x) if checkpointing and has_parameters(layer) else layer(x)
        forward_flops = counter.get_total_flops()
        after_forward = tracker.live
        if end == len(layers):
            pipeline_loss(x, labels).backward()
        else:  # DeepSpeed's non-last stages: backward of the outputs with the next stage's gradients
            outs = [o for o in x if o.requires_grad]
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    grads = sum(p.grad.untyped_storage().nbytes() for p in lora if p.grad is not None)
    mine_lora = [p for p in lora if id(p) in owned]
    frozen = sum(p.numel() for layer in mine for p in layer.parameters() if not p.requires_grad)
    return StepTrace(
        frozen_params=frozen, trainable_params=sum(p.numel() for p in mine_lora), weights=weights,
        lora_bytes=sum(p.numel() * p.element_size() for p in mine_lora), inputs=inputs_bytes,
        after_forward=after_forward, peak=tracker.peak, grads=grads, offloaded=offloaded,
        flops=counter.get_total_flops(),
        attention_flops=attention_flops(counter), forward_flops=forward_flops, tokens=shapes.tokens,
        seconds=time.perf_counter() - t0)


def composed_step(spec: ModelSpec, cfg: Config, frames: int, height: int, width: int, *, checkpointing: bool,
                  blocks_to_swap: int) -> StepTrace:
    """A single-stage step of the full depth composed from traces of 2-4 blocks (seconds instead of tens).

    The repeated blocks are identical, so every figure is affine in the number of resident blocks r and of
    swapped blocks s: traced at (r0, s0), (r0 + 1, s0) and (r0, s0 + 1) with r0, s0 <= 2 (two swapped blocks
    already show the two copies in transit) and extrapolated. tests/test_plan.py checks it against the full
    trace.
    """
    total = spec.last_blocks
    if blocks_to_swap > total:  # offloads blocks of another kind too: no composition
        return trace_training_step(spec, cfg, frames, height, width, checkpointing=checkpointing,
                                   blocks_to_swap=blocks_to_swap)
    s, r = blocks_to_swap, total - blocks_to_swap
    s0, r0 = min(s, 2), min(r, 2)

    def run(resident: int, swapped: int) -> StepTrace:
        return trace_training_step(spec, cfg, frames, height, width, checkpointing=checkpointing,
                                   blocks_to_swap=swapped, num_blocks=resident + swapped)

    base = run(r0, s0)
    steps = []
    if r > r0:
        steps.append((r - r0, run(r0 + 1, s0)))
    if s > s0:
        steps.append((s - s0, run(r0, s0 + 1)))
    out = {}
    for name, value in vars(base).items():
        if isinstance(value, int):
            out[name] = value + sum(k * (getattr(t, name) - value) for k, t in steps)
        else:
            out[name] = value
    out["seconds"] = base.seconds + sum(t.seconds for _, t in steps)
    return StepTrace(**out)


def trace_sampling_step(spec: ModelSpec, cfg: Config, frames: int, height: int, width: int) -> StepTrace:
    """One transformer pass of infer.py's sampler (`adapter.predict` under no_grad), with a frozen LoRA of
    `adapter.rank` applied as inference applies it (a separate, unmerged adapter)."""
    from models.base import Conditioning

    t0 = time.perf_counter()
    shapes = spec.shapes(frames, height, width)
    model = build_transformer(spec, cfg)
    adapter = weightless_adapter(spec, model, cfg)
    lora = add_training_lora(adapter, model, cfg)
    for p in lora:
        p.requires_grad_(False)
    dtype = adapter.dtype
    def meta(shape: tuple[int, ...] | None) -> torch.Tensor | None:
        return None if shape is None else torch.zeros((1, *shape), dtype=dtype, device="meta")

    model_input = torch.cat([meta(shapes.latents), meta(shapes.cond)], dim=1)
    mask = None if shapes.text_mask is None else torch.ones((1, *shapes.text_mask), device="meta")
    cond = Conditioning(meta(shapes.cond), meta(shapes.text), meta(shapes.image), mask, meta(shapes.pooled))
    tracker = LiveStorage()
    tracker.track(model.parameters())
    tracker.track(model.buffers())
    weights = tracker.live
    tracker.track([model_input, cond.text, *([] if cond.image is None else [cond.image])])
    inputs_bytes = tracker.live - weights
    counter = flop_counter()
    timestep = torch.full((1,), 500.0, device="meta")
    with torch.no_grad(), SimulatedDevice(), tracker, counter:
        adapter.predict(model_input, timestep, cond, expert=adapter.experts()[0].name)
    flops = counter.get_total_flops()
    return StepTrace(
        frozen_params=sum(p.numel() for p in model.parameters()), trainable_params=0, weights=weights,
        lora_bytes=sum(p.numel() * p.element_size() for p in lora), inputs=inputs_bytes, after_forward=tracker.live,
        peak=tracker.peak, grads=0, offloaded=0, flops=flops, attention_flops=attention_flops(counter),
        forward_flops=flops, tokens=shapes.tokens, seconds=time.perf_counter() - t0)


@dataclass
class VaeTrace:
    weights: int
    encode_peak: int  # activation peak above the weights, encoding the job's window
    decode_peak: int  # decoding it back


def trace_vae(spec: ModelSpec, frames: int, height: int, width: int) -> VaeTrace | None:
    """The VAE's encode of one window (training encodes the target and the condition video this way) and
    its decode (the end of inference), or None when the planner has no VAE config for the model."""
    from engine.plan.model import build_vae

    vae = build_vae(spec)
    if vae is None:
        return None
    tracker = LiveStorage()
    tracker.track(vae.parameters())
    weights = tracker.live
    video = torch.zeros(1, 3, frames, height, width, device="meta")
    with torch.no_grad(), SimulatedDevice(), tracker:
        latents = vae.encode(video).latent_dist.mode()
    encode = tracker.peak - weights
    tracker.reset_peak()
    before = tracker.live
    with torch.no_grad(), SimulatedDevice(), tracker:
        vae.decode(latents)
    return VaeTrace(weights, encode, tracker.peak - before)
