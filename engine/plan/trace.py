"""Trace one real step on the meta device: live device memory (bytes of storages alive) and FLOPs.

The planner runs the model on "meta" tensors (shapes, dtypes and storage sizes, no data), which stands for
the GPU. `LiveStorage` is a TorchDispatchMode: every storage an op creates is counted until its Python
storage object dies (a weakref callback; torch keeps one Python object per live storage, so views share one
count and the callback fires when the last tensor using it goes). Tensors that exist before the trace
(weights, inputs) are registered with `track`; storages that stand for host memory (block-swap masters) are
never counted.

Attention: on meta tensors `scaled_dot_product_attention` falls back to the math path, which materialises
the tokens x tokens score matrix that no GPU kernel keeps. `SimulatedDevice` routes it to
`aten._scaled_dot_product_flash_attention` (or, with a mask, the memory-efficient kernel): the kernels GPUs
run for these shapes, whose meta and autograd formulas are torch's, so memory is theirs (output +
log-sum-exp) and torch's FLOP counter counts them.

Gradient checkpointing (DeepSpeed's non-reentrant checkpoint, as the trainer uses it) recomputes a layer
inside backward and keeps the recomputed activations in a dict keyed by weak references to the placeholders
autograd saved in forward; an entry goes when autograd frees its placeholder after that node's backward.
That works the same on meta tensors. Two things break it in a trace:
- anything that keeps the graph's saved state alive pins every recomputed activation until the end:
  `backward(retain_graph=True)` (e.g. to run backward twice, for memory and for FLOPs) makes a checkpointed
  step peak above the uncheckpointed one (torch's own checkpoint drops each entry on use, DeepSpeed's does
  not); so does a tracer that stores op outputs. Here: one backward, weak references and byte counts only.
- torch-function modes are not active inside backward, so an op changed in forward by such a mode (the
  attention above) is not changed in the recomputation, which then saves other tensors and DeepSpeed refuses
  it. Each checkpointed layer enters `SimulatedDevice` itself (engine.plan.steps).
tests/test_plan.py compares the checkpointed peak with real runs and checks that each extra block adds one
hidden state to it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


class LiveStorage(TorchDispatchMode):
    """Bytes of live storages: `live` now and `peak` since the last `reset_peak`."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, weakref.ref] = {}
        self._excluded: set[int] = set()

    def track(self, tensors: Iterable[torch.Tensor]) -> None:
        for t in tensors:
            self._add(t)

    def exclude(self, tensors: Iterable[torch.Tensor]) -> None:
        """Never count these tensors' storages (host memory in the simulation)."""
        for t in tensors:
            self._excluded.add(t.untyped_storage()._cdata)

    def _add(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = st._cdata
        if key in self._refs or key in self._excluded:
            return
        n = st.nbytes()
        self._refs[key] = weakref.ref(st, lambda _, key=key, n=n: self._free(key, n))
        self.live += n
        if self.live > self.peak:
            self.peak = self.live

    def _free(self, key: int, n: int) -> None:
        if self._refs.pop(key, None) is not None:
            self.live -= n

    def reset_peak(self) -> None:
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's signature)
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._add(t)
        return out


def _cpu_to_meta(x):  # noqa: ANN001, ANN202
    if isinstance(x, (str, torch.device)) and torch.device(x).type == "cpu":
        return torch.device("meta")
    return x


class SimulatedDevice(TorchFunctionMode):
    """The meta device standing in for the training device, for code written for a real one:

    - `F.scaled_dot_product_attention` runs the flash-attention op (see the module doc), or with a mask the
      memory-efficient one (the kernel GPUs use for masked attention; also O(tokens) memory);
    - `.to("cpu")` of a meta tensor stays on meta (the trainer's device is "cpu" on this machine: DeepSpeed's
      checkpoint moves its inputs there);
    - `torch.tensor(..., device=meta)` is made on the CPU: small index tensors whose values code reads back
      with `int()` (Wan's token grid), which a meta tensor cannot answer.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's signature)
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
            given = {**dict(zip(names, args)), **kwargs}
            q, k, v, mask = given["query"], given["key"], given["value"], given.get("attn_mask")
            dropout, causal, scale = given.get("dropout_p", 0.0), given.get("is_causal", False), given.get("scale")
            if not given.get("enable_gqa") and mask is None:
                return aten._scaled_dot_product_flash_attention(q, k, v, dropout, causal, scale=scale)[0]
            if not given.get("enable_gqa"):  # a mask: the memory-efficient kernel, which takes an additive bias
                if mask.dtype == torch.bool:
                    mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
                bias = mask.to(q.dtype).expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
                grad = q.requires_grad or k.requires_grad or v.requires_grad
                return aten._scaled_dot_product_efficient_attention(q, k, v, bias, grad, dropout, causal,
                                                                    scale=scale)[0]
        elif func is torch.Tensor.to and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            args = (args[0], *map(_cpu_to_meta, args[1:]))
            if "device" in kwargs:
                kwargs = {**kwargs, "device": _cpu_to_meta(kwargs["device"])}
        elif func is torch.tensor and torch.device(kwargs.get("device") or "cpu").type == "meta":
            kwargs = {**kwargs, "device": "cpu"}
        return func(*args, **kwargs)


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False)


def attention_flops(counter: FlopCounterMode) -> int:
    """FLOPs the counter attributed to attention kernels."""
    total = 0
    for op, n in counter.get_flop_counts().get("Global", {}).items():
        if "attention" in str(op):
            total += n
    return total
