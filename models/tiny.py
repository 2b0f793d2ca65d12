"""What every family's tiny random models share: one random-weight filler, so tiny models of every family look alike
(sane activations, every tensor distinct so a swapped key shows)."""

from __future__ import annotations

import math

import torch


def fill_like(name: str, shape: torch.Size, gen: torch.Generator, norm_like_1d: bool = False) -> torch.Tensor:
    """Random values that keep activations sane and make every tensor distinct (so key swaps show).
    Norm scales (and, with `norm_like_1d`, every 1-D weight) are drawn around 1."""
    x = torch.randn(shape, generator=gen)
    leaf = name.rsplit(".", 2)
    if name.endswith("gamma") or (name.endswith("weight") and ("norm" in leaf[-2] or norm_like_1d and len(shape) == 1)):
        return 1.0 + 0.1 * x
    if name.endswith("bias"):
        return 0.02 * x
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return x / math.sqrt(fan_in)


def randomize(module: torch.nn.Module, gen: torch.Generator, norm_like_1d: bool = False) -> None:
    """Overwrite every parameter of `module` with `fill_like`'s values, in parameter order."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(fill_like(name, param.shape, gen, norm_like_1d))
