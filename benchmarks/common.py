"""Shared by the benchmarks: resident-memory probes and the "larger tiny" Wan2.1-I2V model.

The larger tiny model is the test fixture (tools.make_tiny_model) widened so that compute and memory
figures mean something on a CPU: a transformer of about 90 M parameters (350 MiB in fp32) that dominates
the model, as the real 14B transformer does, then the text encoder.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
# Component sizes (the fixture's in brackets). Real Wan2.1-I2V-14B: transformer 16.4 B params, umT5 5.7 B,
# CLIP ViT-H 0.6 B: the transformer dominates, then the text encoder.
LARGER_SIZES = {
    "t5": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8),  # [24, 12, 48, 2]
    "clip": dict(hidden_size=480, intermediate_size=1920, num_hidden_layers=6, num_attention_heads=6),  # [160, 640]
    "transformer": dict(num_attention_heads=6, attention_head_dim=128, ffn_dim=3072, num_layers=8),  # [2x16, 64, 2]
}


def build_larger_tiny(path: str | Path, seed: int = 0) -> Path:
    """The larger tiny model in the diffusers layout at `path`; an existing build of the same sizes is reused."""
    from models.wan.tiny import build_tiny_wan, resolve_sizes

    path = Path(path)
    config = path / "transformer" / "config.json"
    want = resolve_sizes(LARGER_SIZES)["transformer"]
    if (path / "model_index.json").exists() and config.exists():
        have = json.loads(config.read_text())
        if all(have.get(k) == v for k, v in want.items() if not isinstance(v, tuple)):
            return path
    return build_tiny_wan(path, "diffusers", seed=seed, overwrite=True, sizes=LARGER_SIZES)


def rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) to the current RSS; False where /proc/self/clear_refs refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def kernel_peak_rss() -> int:
    """VmHWM: the peak RSS since the process started or since `reset_peak_rss`, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class PeakRSS:
    """Peak RSS inside a `with` block, sampled by a background thread (misses spikes shorter than `interval`)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def mb(n: float) -> str:
    return f"{n / 2**20:8.0f} MB"
