"""Rectified flow, as Wan is trained: x_s = (1 - s) x0 + s eps, the model predicts eps - x0 at timestep 1000 s."""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000


def shift_time(s: torch.Tensor, shift: float) -> torch.Tensor:
    """The usual flow shift s' = shift s / (1 + (shift - 1) s); shift 1 is the identity."""
    return s if shift == 1.0 else shift * s / (1 + (shift - 1) * s)


def sample_time(
    n: int, method: str = "uniform", shift: float = 1.0, min_t: float = 0.0, max_t: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw n flow times in [min_t, max_t]: uniform or logit-normal, then shifted."""
    if method == "uniform":
        s = torch.rand(n, generator=generator)
    elif method == "logit_normal":
        s = torch.sigmoid(torch.randn(n, generator=generator))
    else:
        raise ValueError(f"unknown timestep_sample_method {method!r}")
    s = shift_time(s, shift)
    return min_t + (max_t - min_t) * s


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_s, velocity target) for per-sample times s of shape [B]."""
    s_ = s.view(-1, *([1] * (x0.dim() - 1))).to(x0)
    return (1 - s_) * x0 + s_ * noise, noise - x0


def flow_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE over all latent cells; `weight` (broadcastable) reweights cells, normalized to keep the scale."""
    err = (pred.float() - target.float()) ** 2
    if weight is None:
        return err.mean()
    w = weight.to(err).expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1e-8)
