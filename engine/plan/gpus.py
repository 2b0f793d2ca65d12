"""GPUs the planner estimates time on: peak dense tensor throughput, memory and host link.

Figures are the vendors' dense (no sparsity) peaks with float32 accumulation, as training uses them. Time
is FLOPs / (peak x utilization); the utilization is an assumption shown beside every estimate (`--utilization`).
Compute is bf16 even with float8 *storage* (layerwise casting upcasts each weight for its matmul), so the
bf16 peak is what the estimate uses; the fp8 column is for reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from config.errors import UserError

GiB = 2**30


@dataclass(frozen=True)
class Gpu:
    name: str
    bf16_tflops: float
    fp8_tflops: float | None
    memory_gib: float
    host_gbps: float = 25.0  # effective host <-> device copy bandwidth (block swap), GB/s


GPUS = [
    Gpu("H100 SXM", 989.0, 1979.0, 80, 50.0),
    Gpu("H200 SXM", 989.0, 1979.0, 141, 50.0),
    Gpu("A100 80GB", 312.0, None, 80, 25.0),
    Gpu("L40S", 362.0, 733.0, 48, 25.0),
    Gpu("RTX 4090", 165.2, 330.3, 24, 25.0),
    Gpu("RTX 3090", 71.0, None, 24, 25.0),
]

DEFAULT_UTILIZATION = 0.5


def parse_memory(text: str) -> int:
    """'24GB', '24 GiB', '24G', '24' (GiB), '24000MB' -> bytes. A "24 GB" card holds 24 GiB."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([gGmMtT]?)(i?[bB])?\s*", text)
    if not m:
        raise UserError(f"--gpu-memory {text!r}: expected a size such as 24GB or 80")
    value, unit = float(m.group(1)), (m.group(2) or "g").lower()
    return int(value * {"m": 2**20, "g": GiB, "t": 2**40}[unit])


def parse_gpu(text: str) -> Gpu:
    """'NAME=TFLOPS[:MEMORY_GB]' (bf16 dense TFLOPS) -> a Gpu."""
    m = re.fullmatch(r"\s*([^=]+?)\s*=\s*([0-9]*\.?[0-9]+)\s*(?::\s*([0-9]*\.?[0-9]+)\s*(?:i?[gG][bB]?)?)?\s*", text)
    if not m:
        raise UserError(f"--gpu {text!r}: expected NAME=TFLOPS or NAME=TFLOPS:MEMORY_GB, e.g. 'MI300X=1307:192'")
    return Gpu(m.group(1), float(m.group(2)), None, float(m.group(3)) if m.group(3) else 0.0)


def seconds(flops: float, gpu: Gpu, utilization: float) -> float:
    return flops / (gpu.bf16_tflops * 1e12 * utilization)
