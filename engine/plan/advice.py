"""What to change when a training plan does not fit a GPU's memory (`--plan --gpu-memory 24GB`).

Settings are added one at a time in order of what they cost, each kept once added: activation
checkpointing (about a third more compute), block swap with the fewest blocks that fit (host transfers,
mostly hidden behind compute), float8 storage of the frozen weights (a small loss of precision), the LoRA in
bfloat16 (saves its float32 copies of every LoRA input; coarser updates), the low-cost short-clip mode (the
paper's Sec. 4.5: trains on 13-frame clips) and finally fewer frames. After each addition the plan is
composed again (engine.plan.steps.composed_step); the first combination that fits ends the list.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.schema import Config
from engine.plan.gpus import GiB
from engine.plan.model import ModelSpec
from engine.plan.report import gib, plan_training, plan_with

CONTEXT = GiB  # kept free for the CUDA context and kernel workspaces


@dataclass
class Option:
    changes: dict[str, object]  # every change from the job's config so far (dotted key -> value)
    peak: int
    fits: bool

    def overrides(self) -> str:
        def toml(v: object) -> str:
            return str(v).lower() if isinstance(v, bool) else f'"{v}"' if isinstance(v, str) else str(v)

        return " ".join(f"--set {k}={toml(v)}" for k, v in self.changes.items())


def planned_peak(cfg: Config, spec: ModelSpec, changes: dict[str, object]) -> int:
    """The planned training peak (bytes per GPU) of cfg with dotted-key `changes`."""
    return plan_training(plan_with(cfg, **changes), spec, composed=True).memory.total


def _fewest_swapped(cfg: Config, spec: ModelSpec, changes: dict[str, object], budget: int) -> tuple[int, int] | None:
    """(blocks, peak) with the fewest swapped blocks that fit, or None. The peak falls linearly with the
    swapped count from 2 blocks on (two copies in transit), so two plans place it; a third confirms it."""
    top = spec.blocks
    low_n = min(2, top)
    low = planned_peak(cfg, spec, {**changes, "training.blocks_to_swap": low_n})
    high = planned_peak(cfg, spec, {**changes, "training.blocks_to_swap": top})
    if high > budget:
        return None
    if low <= budget:
        n = low_n if planned_peak(cfg, spec, {**changes, "training.blocks_to_swap": 1}) > budget else 1
        return n, planned_peak(cfg, spec, {**changes, "training.blocks_to_swap": n})
    slope = (low - high) / max(top - low_n, 1)
    n = min(top, low_n + int(-(-(low - budget) // slope)))
    peak = planned_peak(cfg, spec, {**changes, "training.blocks_to_swap": n})
    while peak > budget and n < top:  # the line is exact up to rounding; step once if it was not
        n += 1
        peak = planned_peak(cfg, spec, {**changes, "training.blocks_to_swap": n})
    return n, peak


def _with_swap(cfg: Config, spec: ModelSpec, changes: dict[str, object], budget: int) -> Option:
    """`changes` as they are if they fit, else with the fewest swapped blocks that make them fit."""
    peak = planned_peak(cfg, spec, changes)
    if peak <= budget:
        return Option(dict(changes), peak, True)
    found = _fewest_swapped(cfg, spec, changes, budget)
    if found is None:
        all_swapped = {**changes, "training.blocks_to_swap": spec.blocks}
        return Option(all_swapped, planned_peak(cfg, spec, all_swapped), False)
    n, peak = found
    return Option({**changes, "training.blocks_to_swap": n}, peak, True)


def advise(cfg: Config, spec: ModelSpec, gpu_memory: int) -> list[Option]:
    """Cumulative options, cheapest first, up to the first that fits `gpu_memory` bytes (less 1 GiB)."""
    budget = gpu_memory - CONTEXT
    if cfg.training.pipeline_stages > 1:  # the options are for a model replica on one GPU
        cfg = plan_with(cfg, **{"training.pipeline_stages": 1})
    options: list[Option] = []
    changes: dict[str, object] = {}
    steps = []
    if not cfg.training.activation_checkpointing:
        steps.append({"training.activation_checkpointing": True})
    steps.append({})  # block swap alone
    if cfg.model.transformer_dtype != "float8":
        steps.append({"model.transformer_dtype": "float8"})
    if cfg.adapter.dtype == "float32":
        steps.append({"adapter.dtype": "bfloat16"})
    # A long job (data.window) trains one window at a time: the window is its length, and the knob to shorten.
    frames, length_key = (cfg.data.window, "data.window") if cfg.data.window else (cfg.data.frames, "data.frames")
    if not cfg.training.low_cost and frames > cfg.training.clip_frames:
        steps.append({"training.low_cost": True})
    for step in steps:
        changes.update(step)
        option = _with_swap(cfg, spec, changes, budget)
        if not step and option.changes == changes and options:
            continue
        options.append(option)
        changes = {k: v for k, v in option.changes.items() if k != "training.blocks_to_swap"}
        if option.fits:
            return options
    # Last resort: fewer frames (4k+1). The peak is close to linear in latent frames (flash attention keeps no
    # tokens x tokens matrix): place the largest count that fits between the shortest and the job's, then confirm.
    # The shortest is 1 frame, or for a window the first 4k+1 longer than the frames it takes from the one before.
    base = {**changes, "training.low_cost": False, "training.blocks_to_swap": spec.blocks}
    latent = (frames - 1) // 4
    low = cfg.inference.window_overlap // 4 + 1 if cfg.data.window else 0
    shortest = planned_peak(cfg, spec, {**base, length_key: 4 * low + 1})
    if shortest > budget or latent <= low:
        return options
    full = planned_peak(cfg, spec, {**base, length_key: 4 * latent + 1})
    k = min(latent - 1, low + int((budget - shortest) / max((full - shortest) / (latent - low), 1)))
    while k >= low:
        option = _with_swap(cfg, spec, {**changes, "training.low_cost": False, length_key: 4 * k + 1}, budget)
        if option.fits:
            options.append(option)
            break
        k -= 1
    return options


def render_advice(options: list[Option], gpu_memory: int, current_peak: int, stages: int = 1) -> str:
    head = f"Fitting {gib(gpu_memory)} (1 GiB kept for the CUDA context): the job as configured peaks at " \
           f"{gib(current_peak)}"
    if options and "training.pipeline_stages" not in options[0].changes and stages > 1:
        head += " (the options below are for one GPU per model replica, training.pipeline_stages = 1)"
    if current_peak + CONTEXT <= gpu_memory:
        return head + " - it fits."
    lines = [head + ". Cheapest changes first, each adding to the ones before:"]
    for o in options:
        lines.append(f"  {gib(o.peak):>10} {'fits' if o.fits else 'does not fit'}:  {o.overrides()}")
    if not options or not options[-1].fits:
        lines.append("  nothing here fits: use a GPU with more memory, or pipeline stages over several GPUs "
                     "(training.pipeline_stages)")
    return "\n".join(lines)
