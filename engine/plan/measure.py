"""Measure what the planner predicts on a real run: train.py's Trainer on a small model on this CPU.

Peak memory comes from the CPU allocator itself: the profiler's memory events (every allocation and free of
a CPU tensor, with its size) summed in time order, so the figure is exact bytes of live tensors, which RSS
(malloc arenas, freed pages kept) and tracemalloc (blind to torch's allocator) are not. FLOPs come from
torch's FLOP counter on the same step (with the CPU flash-attention kernels counted by torch's SDPA
formulas, as the planner counts the GPU kernel).

Used by tests/test_plan.py and benchmarks/plan_check.py.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from config.schema import Config

aten = torch.ops.aten


def _cpu_flash(query, key, value, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001, ARG001
    return sdpa_flop_count(query, key, value)


def _cpu_flash_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001, ARG001
    return sdpa_backward_flop_count(grad_out, query, key, value)


def cpu_flop_counter() -> FlopCounterMode:
    """torch's FLOP counter plus the CPU flash-attention kernels (it gets argument shapes)."""
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward})


@dataclass
class Measured:
    frames: int
    height: int
    width: int
    checkpointing: bool
    resident: int  # live tensor bytes before the step (weights, LoRA, optimizer state)
    peak_above_resident: int  # the step's peak live bytes above that
    flops: int


def allocator_peak(fn) -> tuple[int, int]:  # noqa: ANN001
    """(peak, net) live CPU tensor bytes during `fn()`, relative to its start, from the allocator's events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, n in events:
        live += n
        peak = max(peak, live)
    return peak, live


def _resident_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    seen, total = set(), 0
    tensors = [*module.parameters(), *module.buffers()]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    for t in tensors:
        st = t.untyped_storage()
        if st._cdata not in seen:
            seen.add(st._cdata)
            total += st.nbytes()
    return total


def measure_training_steps(cfg: Config, sizes: list[tuple[int, int, int]], checkpointing: bool) -> list[Measured]:
    """One Trainer (DeepSpeed engine, LoRA, checkpointing as given) on `cfg.model`'s weights; for each
    (frames, height, width), a warm-up step, a step measured by the allocator and a step under the counter."""
    from engine.plan.model import resolve_model
    from engine.plan.steps import encoded_sample
    from engine.train import distributed as dist_utils
    from engine.train.batches import BatchStream, TimeSampling
    from engine.train.run_dir import RunDir
    from engine.train.trainer import StagePlan, Trainer
    from models.lora import add_lora
    from models.registry import make_adapter

    cfg.training.activation_checkpointing = checkpointing
    spec = resolve_model(cfg)
    dist = dist_utils.setup()
    adapter = make_adapter(cfg.model, dist.device)
    transformer = adapter.load_transformer()
    a = cfg.adapter
    torch.manual_seed(cfg.seed)
    add_lora(transformer, adapter.lora_target_modules(a.train_image_kv), a.rank, a.alpha or float(a.rank), a.dropout,
             a.dtype)
    first = spec.shapes(*sizes[0])
    pools = {"video": [encoded_sample(first, torch.float32)]}
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, dist, adapter, transformer, [StagePlan("stage1", 1, pools, {"video": 1.0})],
                          RunDir.new(Path(tmp), "plan-check"), lambda path, state: None)
        engine = trainer.engine
        for frames, height, width in sizes:
            sample = encoded_sample(spec.shapes(frames, height, width), torch.float32)
            stream = BatchStream(adapter, {"video": [sample]}, {"video": 1.0}, cfg.training.micro_batch_size_per_gpu,
                                 cfg.seed, 0, TimeSampling(), 1.0, dist.device)
            engine.train_batch(stream)  # warm-up: the optimizer state exists from here on
            resident = _resident_bytes(engine.module, engine.optimizer)
            peak, _ = allocator_peak(lambda stream=stream: engine.train_batch(stream))
            with cpu_flop_counter() as counter:
                engine.train_batch(stream)
            out.append(Measured(frames, height, width, checkpointing, resident, peak, counter.get_total_flops()))
    return out
