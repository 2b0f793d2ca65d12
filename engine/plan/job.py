"""`--plan`: what a job will need, before any weights are downloaded (train.py and infer.py).

The job's transformer is built at full size on the meta device and one real step is traced
(engine.plan.model, engine.plan.steps, engine.plan.trace); the report (engine.plan.report) gives memory per
GPU, FLOPs and times on named GPUs (engine.plan.gpus); with a GPU memory, engine.plan.advice lists the
cheapest settings that fit.
"""

from __future__ import annotations

import argparse
import os

from config.errors import UserError
from config.schema import Config


def run_plan(cfg: Config, args: argparse.Namespace, kind: str = "train") -> str:
    """The plan's text for `kind` "train" or "infer"."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed's checkpoint is imported; no GPU is used
    from engine.plan.gpus import DEFAULT_UTILIZATION, parse_gpu, parse_memory
    from engine.plan.model import resolve_model
    from engine.plan.report import default_gpus, encoder_phase, plan_training, render_sampling, render_training

    spec = resolve_model(cfg, args.variant)
    gpus = default_gpus([parse_gpu(g) for g in args.gpu])
    utilization = DEFAULT_UTILIZATION if args.utilization is None else args.utilization
    if not 0 < utilization <= 1:
        raise UserError(f"--utilization {args.utilization}: a fraction of the peak, above 0 and at most 1")
    memory = parse_memory(args.gpu_memory) if args.gpu_memory else None
    if kind == "infer":
        text, peak = render_sampling(spec, cfg, gpus, utilization)
        return text if memory is None else text + "\n\n" + _sampling_advice(spec, cfg, memory, peak)
    plan = plan_training(cfg, spec)
    parts = [render_training(plan, gpus, utilization), encoder_phase(spec, cfg)]
    if memory is not None:
        from engine.plan.advice import advise, render_advice

        options = advise(cfg, spec, memory) if plan.memory.total + (1 << 30) > memory else []
        parts.append(render_advice(options, memory, plan.memory.total, cfg.training.pipeline_stages))
    return "\n\n".join(parts)


def _sampling_advice(spec, cfg: Config, memory: int, peak: int) -> str:  # noqa: ANN001
    """infer.py keeps the whole transformer on the GPU; float8 storage is the setting that halves it."""
    from engine.plan.advice import CONTEXT
    from engine.plan.report import gib, job_size, plan_with
    from engine.plan.steps import trace_sampling_step

    head = f"Fitting {gib(memory)} (1 GiB kept for the CUDA context): sampling peaks at {gib(peak)}"
    if peak + CONTEXT <= memory:
        return head + " - it fits."
    if cfg.model.transformer_dtype == "float8":
        return head + ": it does not fit even with float8 storage; use a GPU with more memory or fewer frames."
    fp8 = trace_sampling_step(spec, plan_with(cfg, **{"model.transformer_dtype": "float8"}), *job_size(cfg, spec))
    verdict = "fits" if fp8.peak + CONTEXT <= memory else "does not fit"
    return f'{head}.\n  {gib(fp8.peak):>10} {verdict}:  --set model.transformer_dtype="float8"'
