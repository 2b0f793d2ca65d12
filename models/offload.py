"""Block offload ("block swap"): the last N transformer blocks live off the compute device.

Their frozen weights stay on the offload device (pinned CPU memory on CUDA machines) and are copied to
the compute device for the block's forward, and again for its backward when training, then dropped:
the offload copy is the master (frozen weights never change), so moving a block out costs no transfer.
Trainable tensors (LoRA) stay on the compute device. While block k runs, the next offloaded block is
copied in ahead of use (forward order in forward, reverse order in backward), so at most two offloaded
blocks are resident at a time. On CUDA the copies run on a side stream from pinned memory
(`non_blocking`), and the compute stream waits on an event only when the block is needed, so transfers
overlap compute.

The hooks sit on the blocks' own modules (`BlockLayer.block`), so they act on the layer list (pipeline
training) and on the whole-model forward (`adapter.predict`) alike. Backward is followed with two
identity autograd functions around each block: the gradient reaching the block's output moves it in (and
prefetches the one before it); the gradient leaving through its input moves it out. A callback at the end
of each backward moves out whatever is still resident. Activation checkpointing works: a recomputation
(inside backward) finds the block resident and leaves it so.

Train with activation checkpointing when offloading (the config's default): without it, autograd keeps
the compute-device copies of the weights it saved for backward alive until then (moving a block out
drops only our reference), so weight memory is saved in forward-only passes but not across a training
step. With checkpointing a block's forward saves nothing, and its weights leave the device with it.

Placements are (device, dtype). On a CPU-only machine a placement that differs only in dtype exercises
the whole mechanism: a block whose weights were not moved in before use fails with a dtype mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.base import BlockLayer, CheckpointedLayer


@dataclass(frozen=True)
class Placement:
    """Where tensors live: a device and, optionally, a dtype (None keeps each tensor's own). On the compute
    side the dtype is always each tensor's own (the model's mix of bf16 and float32-kept modules)."""

    device: torch.device
    dtype: torch.dtype | None = None


class _OnGrad(torch.autograd.Function):
    """Identity whose backward first calls `fn` (when the gradient reaches this point of the graph)."""

    @staticmethod
    def forward(ctx, fn, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 (autograd signature)
        ctx.fn = fn
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # noqa: ANN001
        ctx.fn()
        return None, grad


def _in_backward() -> bool:
    return torch._C._current_graph_task_id() != -1


def _wrap_first_tensor(obj, fn):
    """Apply `fn` to the first tensor in `obj` (a tensor, or a tuple/list holding tensors one level deep)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj), True
    if isinstance(obj, (tuple, list)):
        items = list(obj)
        for i, item in enumerate(items):
            new, done = _wrap_first_tensor(item, fn)
            if done:
                items[i] = new
                return type(obj)(items), True
    return obj, False


@dataclass
class _Slot:
    """One frozen tensor of an offloaded block: its owner, name, offload master and compute dtype."""

    module: nn.Module
    name: str
    is_param: bool
    master: torch.Tensor
    dtype: torch.dtype

    def set(self, t: torch.Tensor) -> None:
        if self.is_param:
            getattr(self.module, self.name).data = t
        else:
            self.module._buffers[self.name] = t


class BlockSwap:
    """Keeps `blocks[-num_offloaded:]` on `offload` and moves each to `compute` for its turn.

    `events` records ("in" | "out", block index) in order and `max_resident` the most offloaded blocks
    resident (or in transfer) at once; tests and logs read them.
    """

    def __init__(self, blocks: Sequence[nn.Module], num_offloaded: int, compute: Placement,
                 offload: Placement) -> None:
        if not 0 <= num_offloaded <= len(blocks):
            raise ValueError(f"cannot offload {num_offloaded} of {len(blocks)} blocks")
        self.blocks, self.compute, self.offload = list(blocks), compute, offload
        self.offloaded = list(range(len(blocks) - num_offloaded, len(blocks)))
        self.cuda = self.compute.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.compute.device) if self.cuda else None
        self.resident: set[int] = set()
        self.pending: dict[int, tuple[list[torch.Tensor], object]] = {}
        self.events: list[tuple[str, int]] = []
        self.max_resident = 0
        self._cleanup_queued = False
        self.slots = {i: self._make_slots(self.blocks[i]) for i in self.offloaded}
        self.handles = []
        for i, block in enumerate(self.blocks):
            if i not in self.slots:
                block.to(self.compute.device)
            self.handles.append(block.register_forward_pre_hook(self._pre_hook(i), with_kwargs=True))
            self.handles.append(block.register_forward_hook(self._post_hook(i), with_kwargs=True))

    def _make_slots(self, block: nn.Module) -> list[_Slot]:
        slots = []
        pin = self.cuda and self.offload.device.type == "cpu"
        for module in block.modules():
            tensors = [(n, p, True) for n, p in module.named_parameters(recurse=False)]
            tensors += [(n, b, False) for n, b in module.named_buffers(recurse=False) if b is not None]
            for name, t, is_param in tensors:
                if is_param and t.requires_grad:  # trainable (LoRA): lives on the compute device
                    t.data = t.data.to(self.compute.device)
                    continue
                master = t.detach().to(self.offload.device, self.offload.dtype or t.dtype, copy=True)
                slot = _Slot(module, name, is_param, master.pin_memory() if pin else master, t.dtype)
                slot.set(slot.master)
                slots.append(slot)
        return slots

    # -- moves ------------------------------------------------------------------------------------
    def _start_in(self, i: int | None) -> None:
        """Begin copying block i to the compute device (asynchronously on CUDA)."""
        if i is None or i in self.resident or i in self.pending:
            return
        dev = self.compute.device
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(dev))  # its masters are not written, but be safe
            with torch.cuda.stream(self.stream):
                tensors = [s.master.to(dev, s.dtype, non_blocking=True) for s in self.slots[i]]
                event = torch.cuda.Event()
                event.record(self.stream)
        else:
            tensors = [s.master.to(dev, s.dtype) for s in self.slots[i]]
            event = None
        self.pending[i] = (tensors, event)
        self.max_resident = max(self.max_resident, len(self.resident) + len(self.pending))

    def _ensure_in(self, i: int) -> None:
        if i in self.resident:
            return
        self._start_in(i)
        tensors, event = self.pending.pop(i)
        if event is not None:
            current = torch.cuda.current_stream(self.compute.device)
            current.wait_event(event)
            for t in tensors:  # allocated on the side stream, used on this one: keep the allocator honest
                t.record_stream(current)
        for slot, t in zip(self.slots[i], tensors):
            slot.set(t)
        self.resident.add(i)
        self.events.append(("in", i))

    def _move_out(self, i: int) -> None:
        if i not in self.resident:
            return
        for slot in self.slots[i]:
            slot.set(slot.master)
        self.resident.discard(i)
        self.events.append(("out", i))

    def _neighbour(self, i: int, step: int) -> int | None:
        """The next offloaded block after i in direction `step` (+1 forward, -1 backward)."""
        j = i + step
        return j if j in self.slots else None

    # -- hooks ------------------------------------------------------------------------------------
    def _pre_hook(self, i: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if i in self.slots:
                self._ensure_in(i)
            if _in_backward():  # recomputation under checkpointing: the backward hooks manage residency
                return None
            self._start_in(self._neighbour(i, +1))
            if torch.is_grad_enabled():
                mark = lambda x: self._mark(x, lambda: self._after_backward(i))  # noqa: E731
                args, done = _wrap_first_tensor(args, mark)
                for key in kwargs if not done else ():
                    kwargs[key], done = _wrap_first_tensor(kwargs[key], mark)
                    if done:
                        break
            return args, kwargs

        return hook

    def _post_hook(self, i: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output):
            if _in_backward():
                return None
            if i in self.slots:
                self._move_out(i)
            if torch.is_grad_enabled():
                output, _ = _wrap_first_tensor(output, lambda x: self._mark(x, lambda: self._before_backward(i)))
            return output

        return hook

    @staticmethod
    def _mark(x: torch.Tensor, fn) -> torch.Tensor:
        return _OnGrad.apply(fn, x) if x.requires_grad else x

    def _before_backward(self, i: int) -> None:
        if not self._cleanup_queued:
            torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
            self._cleanup_queued = True
        if i in self.slots:
            self._ensure_in(i)
        self._start_in(self._neighbour(i, -1))

    def _after_backward(self, i: int) -> None:
        if i in self.slots:
            self._move_out(i)

    def _end_of_backward(self) -> None:
        self._cleanup_queued = False
        for i in sorted(self.resident):
            self._move_out(i)
        self.pending.clear()

    def remove(self) -> None:
        """Remove the hooks and bring every offloaded block to the compute device."""
        for h in self.handles:
            h.remove()
        for i in self.offloaded:
            self._ensure_in(i)


def enable_block_swap(layers: Sequence[nn.Module], num_blocks: int, device: torch.device | str,
                      offload_device: torch.device | str = "cpu", offload_dtype: torch.dtype | None = None
                      ) -> BlockSwap | None:
    """Offload the last `num_blocks` block layers of an adapter's layer list; the rest goes to `device`.

    Call it after LoRA is added (LoRA weights are created where their base layer is) and with the
    transformer loaded on CPU (`adapter.load_transformer("cpu")`), so the whole model never has to fit on
    the device. Returns None when nothing is offloaded.
    """
    device = torch.device(device)
    layers = [layer.layer if isinstance(layer, CheckpointedLayer) else layer for layer in layers]
    blocks = [layer.block for layer in layers if isinstance(layer, BlockLayer)]
    for layer in layers:
        if not isinstance(layer, BlockLayer):
            layer.to(device)
    if num_blocks == 0:
        for block in blocks:
            block.to(device)
        return None
    return BlockSwap(blocks, num_blocks, Placement(device),
                     Placement(torch.device(offload_device), offload_dtype))
