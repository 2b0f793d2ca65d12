"""The rectified-flow objective and the encode cache."""

from __future__ import annotations

import torch

from engine.encode.cache import EncodeCache, fingerprint
from engine.train.flow import flow_loss, noisy_latents, sample_time, shift_time


def test_noisy_latents_interpolate_and_target_is_velocity():
    x0, eps = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    s = torch.tensor([0.0, 1.0])
    xs, v = noisy_latents(x0, eps, s)
    assert torch.equal(xs[0], x0[0]) and torch.equal(xs[1], eps[1])
    assert torch.equal(v, eps - x0)
    xs, _ = noisy_latents(x0, eps, torch.tensor([0.25, 0.5]))
    assert torch.allclose(xs[0], 0.75 * x0[0] + 0.25 * eps[0])


def test_sample_time_bounds_methods_and_shift():
    g = torch.Generator().manual_seed(0)
    for method in ("uniform", "logit_normal"):
        s = sample_time(10000, method, shift=1.0, min_t=0.2, max_t=0.6, generator=g)
        assert s.min() >= 0.2 and s.max() <= 0.6
    u = sample_time(20000, "uniform", generator=g)
    assert abs(u.mean().item() - 0.5) < 0.02
    shifted = sample_time(20000, "uniform", shift=3.0, generator=g)
    assert shifted.mean() > 0.6  # shift > 1 moves mass towards noise
    assert torch.allclose(shift_time(torch.tensor([0.0, 0.5, 1.0]), 3.0), torch.tensor([0.0, 0.75, 1.0]))
    assert torch.equal(sample_time(5, generator=torch.Generator().manual_seed(1)),
                       sample_time(5, generator=torch.Generator().manual_seed(1)))


def test_flow_loss_weighting():
    pred, target = torch.zeros(1, 1, 1, 2, 1), torch.tensor([1.0, 3.0]).view(1, 1, 1, 2, 1)
    assert flow_loss(pred, target).item() == 5.0
    w = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2, 1)
    assert flow_loss(pred, target, w).item() == 1.0


def test_cache_hits_and_invalidates_only_changed_entry(tmp_path):
    cache = EncodeCache(tmp_path / "cache")
    calls = []

    def enc(x):
        calls.append(x)
        return {"z": torch.full((2,), float(x))}

    a, b = fingerprint("video", torch.ones(3), "w1"), fingerprint("video", torch.zeros(3), "w1")
    assert a != b and a == fingerprint("video", torch.ones(3), "w1")
    assert fingerprint("video", torch.ones(3), "w2") != a  # other weights -> other key
    assert cache.get("lat", a, lambda: enc(1))["z"].tolist() == [1.0, 1.0]
    cache.get("lat", b, lambda: enc(2))
    cache.get("lat", a, lambda: enc(1))
    assert calls == [1, 2] and cache.hits == 1 and cache.misses == 2
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()) == ["lat", "lat"]
    # a torn file is recomputed, not trusted
    cache.path("lat", a).write_bytes(b"garbage")
    assert cache.get("lat", a, lambda: enc(7))["z"].tolist() == [7.0, 7.0]
