"""Micro-batches for the flow objective, drawn deterministically from (seed, data-parallel rank, step).

Every random choice - which samples, the noise, the flow time - comes from a generator seeded by
(seed, dp_rank, step, micro-step). So data-parallel ranks draw different noise and clips, the first
and last pipeline stages of one replica draw the same batch without talking, and a resumed run draws
exactly what the uninterrupted run would have: no RNG state needs saving.

Experts (families with several transformers chosen by timestep): each step's expert is drawn first, from
(seed, step) alone so every rank trains the same expert, by drawing one flow time from the run's distribution and
taking the expert that serves it; the step's micro-batches then draw their times from that expert's range only.
With one expert nothing extra is drawn: the batches are the plain ones. Training some of a family's experts only
(model.experts) draws every time from the run's distribution restricted to their timesteps (rejection sampling,
which keeps the distribution's shape inside the range).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from engine.encode.samples import EncodedSample
from engine.train.flow import NUM_TRAIN_TIMESTEPS, noisy_latents, sample_time
from models.base import Conditioning, ModelAdapter
from models.family import Expert

EXPERT_DRAW = 7  # a tag that keeps the step's expert draw apart from its micro-batches' generators
MAX_REDRAWS = 1000


def generator_for(*parts: int) -> torch.Generator:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


@dataclass
class TimeSampling:
    method: str = "uniform"
    shift: float = 1.0
    min_t: float = 0.0
    max_t: float = 1.0


class BatchStream:
    """Yields ((model_input, timestep, text, image), (target, weight)) micro-batches for one stage.

    `pools` maps a kind ("video", "reference") to its samples; `mix` gives the probability of drawing
    each kind for a micro-batch. A micro-batch holds `batch_size` samples of one kind (their shapes match).
    """

    def __init__(self, adapter: ModelAdapter, pools: dict[str, list[EncodedSample]], mix: dict[str, float],
                 batch_size: int, seed: int, dp_rank: int, times: TimeSampling, edit_loss_weight: float = 1.0,
                 device: torch.device | str = "cpu", experts: Sequence[Expert] | None = None) -> None:
        self.adapter, self.batch_size, self.seed, self.dp_rank = adapter, batch_size, seed, dp_rank
        self.times, self.edit_loss_weight, self.device = times, edit_loss_weight, torch.device(device)
        self.kinds = [k for k in pools if pools[k] and mix.get(k, 0) > 0]
        if not self.kinds:
            raise ValueError("no samples to train on")
        self.pools = pools
        total = sum(mix[k] for k in self.kinds)
        self.probs = torch.tensor([mix[k] / total for k in self.kinds], dtype=torch.float64)
        self.experts = list(experts) if experts else list(adapter.experts())
        # Training some of a family's experts (model.experts): every time is drawn inside their timesteps.
        self.clamped = {e.name for e in self.experts} != {e.name for e in adapter.experts()}
        self.step, self.micro = 0, 0
        self.expert: Expert | None = None  # the expert of the current step (several experts only)

    def at(self, step: int) -> BatchStream:
        """Position the stream at optimizer step `step` (micro-steps restart)."""
        self.step, self.micro = step, 0
        self.expert = self.expert_at(step) if len(self.experts) > 1 or self.clamped else None
        return self

    def expert_at(self, step: int) -> Expert:
        """The expert step `step` trains: the only one, or the one serving a flow time drawn from (seed, step)."""
        if len(self.experts) == 1:
            return self.experts[0]
        g = generator_for(self.seed, EXPERT_DRAW, step)
        s = self._times(1, g)
        return self._serving(float(s[0]) * NUM_TRAIN_TIMESTEPS)

    def _serving(self, t: float) -> Expert:
        for expert in self.experts:
            if expert.serves(t):
                return expert
        raise ValueError(f"no trained expert serves timestep {t:g}")

    def _times(self, n: int, g: torch.Generator) -> torch.Tensor:
        tm = self.times
        return sample_time(n, tm.method, tm.shift, tm.min_t, tm.max_t, g)

    def _times_of(self, expert: Expert, n: int, g: torch.Generator) -> torch.Tensor:
        """n flow times from the run's distribution restricted to `expert`'s timesteps (redrawn until inside)."""
        s = self._times(n, g)
        for _ in range(MAX_REDRAWS):
            outside = [i for i, v in enumerate(s.tolist()) if not expert.serves(v * NUM_TRAIN_TIMESTEPS)]
            if not outside:
                return s
            s[outside] = self._times(len(outside), g)
        raise ValueError(f"the flow-time range (training.min_t/max_t, shift) barely reaches expert {expert.name!r} "
                         f"(timesteps {expert.low:g}..{expert.high:g})")

    def __iter__(self) -> Iterator[tuple[tuple, tuple]]:
        return self

    def __next__(self) -> tuple[tuple, tuple]:
        g = generator_for(self.seed, self.dp_rank, self.step, self.micro)
        self.micro += 1
        kind = self.kinds[int(torch.multinomial(self.probs, 1, generator=g))] if len(self.kinds) > 1 else self.kinds[0]
        pool = self.pools[kind]
        picks = torch.randint(len(pool), (self.batch_size,), generator=g).tolist()
        chosen = [pool[i] for i in picks]
        x0 = torch.stack([s.latents for s in chosen])
        noise = torch.randn(x0.shape, generator=g, dtype=torch.float32)
        s = self._times(len(chosen), g) if self.expert is None else self._times_of(self.expert, len(chosen), g)
        xs, target = noisy_latents(x0, noise, s)
        cond = torch.stack([c.cond for c in chosen])
        model_input = self.adapter.transformer_input(xs, cond)
        text = torch.stack([c.text for c in chosen])
        image = torch.stack([c.image for c in chosen]) if chosen[0].image is not None else torch.empty(0)
        generate = torch.stack([c.generate for c in chosen])
        weight = 1.0 + (self.edit_loss_weight - 1.0) * generate
        dev = self.device
        # Text mask and pooled embedding: families that have them (HunyuanVideo); None for Wan.
        optional = ([x.text_mask for x in chosen], [x.pooled for x in chosen])
        c = Conditioning(cond, text.to(dev), image.to(dev) if image.numel() else None,
                         *(None if t[0] is None else torch.stack(t).to(dev) for t in optional))
        inputs = self.adapter.first_layer_input(model_input.to(dev), (s * NUM_TRAIN_TIMESTEPS).to(dev), c)
        return inputs, (target.to(dev), weight.to(dev))
