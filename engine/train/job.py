"""train.py's job function `run_training`, in order: pre-flight, encode once, LoRA, the engine, stages, outputs."""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from config.errors import UserError
from config.loader import render_toml, require, save_config
from config.progress import Progress, StopSignal, as_progress
from config.schema import Config
from datasets.job import Job, load_job, training_samples
from engine.encode.cache import EncodeCache
from engine.encode.samples import encode_samples
from engine.train import checkpoint as ckpt
from engine.train import distributed as dist_utils
from engine.train.previews import LAST_LORA, Previews
from engine.train.run_dir import RunDir, find_resume
from engine.train.trainer import StagePlan, Trainer, TrainResult
from models.family import Expert


def preflight(cfg: Config, world_size: int) -> None:
    """Cheap checks that fail before any heavy work, each with its own message."""
    require(cfg, "model.ckpt_path", "data.video")
    t = cfg.training
    if world_size % t.pipeline_stages:
        raise UserError(f"training.pipeline_stages = {t.pipeline_stages} does not divide the {world_size} processes")
    if cfg.optimizer.type == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("optimizer.type = 'adamw8bit' needs bitsandbytes (pip install bitsandbytes), or use 'adamw'")
    if t.steps == 0 and t.reference_steps == 0:
        raise UserError("training.steps and training.reference_steps are both 0: nothing to train")
    out = Path(cfg.output_dir)
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not shutil.os.access(probe, shutil.os.W_OK):
        raise UserError(f"output_dir '{out}' is not writable")
    free = shutil.disk_usage(probe).free
    if free < 512 * 2**20:
        raise UserError(f"output_dir '{out}': only {free / 2**20:.0f} MB free; LoRA files and checkpoints need more")


def plan_stages(cfg: Config, encoded: dict[str, list]) -> list[StagePlan]:
    t = cfg.training
    stages = []
    if t.steps:
        stages.append(StagePlan("stage1", t.steps, {"video": encoded["video"]}, {"video": 1.0}))
    if encoded["reference"] and t.reference_steps:
        mix = {"reference": t.reference_ratio, "video": 1.0 - t.reference_ratio}
        stages.append(StagePlan("stage2", t.reference_steps, encoded, mix))
    elif t.reference_steps and cfg.data.reference_frames:
        warnings.warn(f"{cfg.data.reference_frames}: no reference frames found; stage 2 skipped", stacklevel=2)
    return stages


def encode_job(cfg: Config, adapter, job: Job, dist: dist_utils.Dist, progress: Progress | None = None,
               previews: Previews | None = None) -> dict[str, list]:
    """Rank 0 encodes (and fills the cache) first; the other ranks then read the cache. The previews' inference
    sample is encoded along (the same cache entries infer.py reads), so no encoder runs during training."""
    samples = training_samples(cfg, job)
    flat = samples["video"] + samples["reference"]
    extra = [previews.sample] if previews is not None else []
    cache = EncodeCache(cfg.data.cache_dir)
    encoded = None
    for turn in (True, False):
        if dist.is_main == turn:
            encoded, _ = encode_samples(adapter, flat + extra, cache, cfg.data.latent_mask, progress=progress)
            if previews is not None and dist.is_main:
                previews.encode(adapter, cache, progress)
        dist_utils.barrier()
    adapter.unload()
    n = len(samples["video"])
    return {"video": encoded[:n], "reference": encoded[n:len(flat)]}


def trained_experts(cfg: Config, adapter) -> list[Expert]:  # noqa: ANN001 (a models.base.ModelAdapter)
    """The experts this run trains: model.experts (the loader checked the names), else all of the family's."""
    return [e for e in adapter.experts() if not cfg.model.experts or e.name in cfg.model.experts]


def experts_summary(experts: list[Expert], loras: dict[str, Path]) -> dict[str, dict]:
    """Each trained expert's timesteps (the boundary, on the sampler's scale after the shift) and its LoRA file."""
    return {e.name: {"timesteps": e.describe(), "lora": str(loras[e.name]) if e.name in loras else None}
            for e in experts}


def add_loras(cfg: Config, adapter) -> dict[str, nn.Module]:  # noqa: ANN001 (a models.base.ModelAdapter)
    """Every expert's transformer with a trainable LoRA ({expert name: transformer}); `adapter.init_from_existing`
    goes into the expert it is for."""
    from models.lora import add_lora, load_lora_weights_into, lora_expert
    from models.lora_files import read_lora_file

    a = cfg.adapter
    transformers = {}
    for expert in trained_experts(cfg, adapter):
        # With block swap the whole model stays on CPU; the trainer moves all but the swapped blocks in.
        model = adapter.load_transformer("cpu" if cfg.training.blocks_to_swap else None, expert=expert.name)
        torch.manual_seed(cfg.seed)  # the LoRA's random init: the same on every rank and in every run
        add_lora(model, adapter.lora_target_modules(a.train_image_kv), a.rank, a.alpha or float(a.rank), a.dropout,
                 a.dtype)
        transformers[expert.name] = model
    if a.init_from_existing:
        path = Path(a.init_from_existing)
        target = lora_expert(path, read_lora_file(path)[1], adapter.experts()) if len(transformers) > 1 else None
        load_lora_weights_into(transformers[target.name] if target else next(iter(transformers.values())), path)
    return transformers


def make_previews(cfg: Config, dist: dist_utils.Dist) -> Previews | None:
    """The run's previews when `training.preview_every_n_steps` asks for them (their inputs checked now, before
    any model loads); None when off, or with pipeline stages (no rank holds the whole transformer)."""
    if cfg.training.preview_every_n_steps == "off":
        return None
    if cfg.training.pipeline_stages > 1:
        warnings.warn("training previews need the whole transformer on one rank: off with training.pipeline_stages "
                      f"= {cfg.training.pipeline_stages}", stacklevel=2)
        return None
    return Previews(cfg, dist.is_main)


def run_training(cfg: Config, resume: str | None = None, resume_requested: bool = False, *,
                 progress: Progress | None = None, stop: StopSignal | None = None) -> TrainResult:
    """train.py's job: encode the job once, fit the LoRA (each expert's), write the run folder.

    `progress` receives the encode phases and every training step (phase "train": loss, learning rate), on every
    rank of a distributed run (a console shows rank 0's); `stop` (a threading.Event or a callable) ends the run
    after the current step with a checkpoint that `resume` continues. Raises UserError for bad input before any
    heavy work. Safe to call from a worker thread: it installs no signal handler and prints nothing.
    """
    from models.lora import save_lora_state
    from models.registry import make_adapter

    preflight(cfg, dist_utils.world_size_from_env())
    if resume_requested:  # cheap file reads, before the engine, the encoders and the model start
        resume_run, resume_tag = find_resume(cfg.output_dir, cfg.name, resume)
        ckpt.verify(resume_run.checkpoints / resume_tag)
    dist = dist_utils.setup()
    progress = as_progress(progress)
    adapter = make_adapter(cfg.model, dist.device)
    job = load_job(cfg, edited=False)
    previews = make_previews(cfg, dist)
    encoded = encode_job(cfg, adapter, job, dist, progress, previews)
    stages = plan_stages(cfg, encoded)
    if not stages:
        raise UserError("no stage to train: training.steps is 0 and there are no reference frames")

    transformers = add_loras(cfg, adapter)
    a = cfg.adapter
    alpha = a.alpha or float(a.rank)

    if resume_requested:
        run_dir, tag = dist_utils.broadcast((resume_run, resume_tag))  # rank 0's choice, on every rank
    else:
        run_dir, tag = dist_utils.broadcast(RunDir.new(cfg.output_dir, cfg.name) if dist.is_main else None), None
    if dist.is_main:
        save_config(cfg, run_dir.path / "config.toml")
    config_text = render_toml(cfg)

    def save(path: Path, state: dict, expert: Expert | None = None) -> None:
        model = transformers[expert.name] if expert else next(iter(transformers.values()))
        save_lora_state(path, state, model, fmt=a.save_format, rank=a.rank, alpha=alpha, trigger=cfg.data.trigger,
                        config_toml=config_text, several_experts=expert is not None)

    trainer = Trainer(cfg, dist, adapter, transformers, stages, run_dir, save)
    if previews is not None:
        previews.start(run_dir.path, trainer.total_steps)
        trainer.previews = previews
    if tag:
        trainer.load_checkpoint(run_dir.checkpoints, tag)
        if dist.is_main:
            run_dir.trim_metrics(trainer.step)
        if previews is not None:
            previews.restore(trainer.step)
    writer = None
    if dist.is_main:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides the events a killed run logged after its checkpoint (they are redone)
        writer = SummaryWriter(str(run_dir.tensorboard), purge_step=trainer.step + 1 if tag else None)
    try:
        result = trainer.run(progress, writer, stop)
    finally:
        if writer is not None:
            writer.close()
    checksums = trainer.replica_checksums()
    if dist.is_main:
        summary = {"steps": result.steps, "seconds": round(result.seconds, 2), "final_loss": result.final_loss,
                   "lora": str(result.lora) if result.lora else None, "interrupted": result.interrupted,
                   "world_size": dist.world_size, "pipeline_stages": cfg.training.pipeline_stages,
                   "stages": [{"name": s.name, "steps": s.steps, "mix": s.mix} for s in stages],
                   "lora_checksum_per_rank": checksums, "stop_reason": result.stop_reason}
        if previews is not None:
            summary.update(previews.summary())
            if not result.interrupted:
                summary["lora_last"] = str(run_dir.path / LAST_LORA)
        if len(result.loras) > 1:
            summary["loras"] = {name: str(p) for name, p in result.loras.items()}
        if len(adapter.experts()) > 1:  # where the boundary is, and which experts this run trained
            summary["experts"] = experts_summary(trained_experts(cfg, adapter), result.loras)
        (run_dir.path / "summary.json").write_text(json.dumps(summary, indent=1))
    dist_utils.barrier()
    return result
