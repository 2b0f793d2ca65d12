"""The training run: LoRA on the transformer's layer list, a DeepSpeed pipeline engine per expert, stages.

One engine path for every layout of devices: the adapter's layers go into a DeepSpeed `PipelineModule`
(one stage on a single device; `training.pipeline_stages` stages across devices), data parallelism
over the remaining ranks. Stage 1 trains on the video samples, stage 2 (when there are edited later
frames) continues on reference samples mixed with video samples (paper Sec. 3.3).

Experts: a family with several transformers chosen by timestep (models.base) trains each expert's LoRA in its own
engine; each step draws its timestep's expert (the same on every rank: `BatchStream.expert_at`) and runs that
engine, with the learning-rate schedule of the whole run. LoRA files and checkpoints are one per expert. A
one-expert family is the common case and runs exactly as a plain single-engine trainer.

The loop reports through a progress callback (config.progress) and stops cooperatively: `stop` (an Event or a
callable) is checked after every step, and a stop writes a checkpoint, as SIGTERM does in train.py (whose main
thread owns the signal handlers and sets the event).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from config.atomic import atomic_path
from config.errors import UserError
from config.progress import Progress, StopSignal, as_progress, report, stop_requested
from config.schema import Config
from engine.train import checkpoint as ckpt
from engine.train import distributed as dist_utils
from engine.train.batches import BatchStream, TimeSampling
from engine.train.flow import flow_loss
from engine.train.run_dir import RunDir
from models.base import BlockLayer
from models.family import Expert
from models.offload import enable_block_swap

LORA_DEFAULT = re.compile(r"\.default(?=\.weight$)")


class GradBoundary(nn.Module):
    """Between pipeline stages DeepSpeed back-propagates into every floating tensor a stage emits, so
    the per-step constants (text, modulation, rotary tables) must require grad there."""

    def forward(self, inputs: tuple) -> tuple:
        return tuple(t if t.requires_grad or not t.is_floating_point() else t.detach().requires_grad_()
                     for t in inputs)


def pipeline_layers(adapter, pipeline_stages: int, expert: str | None = None) -> list[nn.Module]:
    """The expert's layer list as the DeepSpeed pipeline runs it: with several stages, a `GradBoundary` after
    the embedding and blocks that compute no gradients for the per-step constants (models.base.BlockLayer)."""
    layers = list(adapter.layers(expert))
    if pipeline_stages > 1:
        layers.insert(1, GradBoundary())
        for layer in layers:
            if isinstance(layer, BlockLayer):
                layer.constants_without_grad = True
    return layers


def pipeline_loss(pred: torch.Tensor, labels: tuple) -> torch.Tensor:
    target, weight = labels
    return flow_loss(pred, target, weight)


def lr_lambda(step: int, warmup: int, total: int, kind: str) -> float:
    """Linear warmup, then constant / linear / cosine decay to zero at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(params: list[nn.Parameter], cfg: Config) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.type == "adamw8bit":
        import bitsandbytes as bnb  # checked in the pre-flight

        return bnb.optim.AdamW8bit(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps)
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps)


def ds_config(cfg: Config) -> dict:
    t = cfg.training
    conf = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size_per_gpu,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if t.gradient_clipping > 0:
        conf["gradient_clipping"] = t.gradient_clipping
    return conf


def _engine_keeping_devices(module: nn.Module, optimizer, scheduler, conf: dict):
    """`deepspeed.initialize` for a PipelineModule, except that the engine leaves parameters where they are
    (it would otherwise move the offloaded blocks onto the device)."""
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.runtime.pipe.engine import PipelineEngine

    mpu = module.mpu()
    return PipelineEngine(args=None, model=module, optimizer=optimizer, lr_scheduler=scheduler, mpu=mpu,
                          config=conf, config_class=DeepSpeedConfig(conf, mpu), dont_change_device=True)


@dataclass
class StagePlan:
    name: str
    steps: int
    pools: dict
    mix: dict


@dataclass
class TrainResult:
    """What a training run made: the run folder, the final LoRA (one per expert in `loras`), the losses."""

    run_dir: Path
    steps: int
    final_loss: float
    lora: Path | None  # the LoRA file (of the first expert, for a family with several)
    seconds: float
    losses: list[float] = field(default_factory=list)
    interrupted: bool = False
    loras: dict[str, Path] = field(default_factory=dict)  # expert name -> its final LoRA file
    stop_reason: str = ""  # why the run ended where it did (early stop, all steps, a stop request)


@dataclass
class ExpertRun:
    """One expert's part of the run: its transformer (with LoRA), pipeline module, engine and block swap."""

    expert: Expert
    transformer: nn.Module
    module: Any  # deepspeed.pipe.PipelineModule
    engine: Any  # deepspeed's PipelineEngine
    owned: set[int]  # ids of the parameters this rank's stage holds
    swap: Any = None


def lora_file(name: str, expert: Expert) -> str:
    """`lora_step000050.safetensors` for an expert: its suffix before the extension."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}{expert.suffix}{dot}{ext}" if expert.suffix else name


class Trainer:
    """Holds the engines (one per trained expert) and the run folder; `run()` trains the planned stages from
    `step`. `transformer` is the one transformer (with its LoRA added), or {expert name: transformer} for a family
    with several; `save_lora(path, state)` writes one LoRA file (`expert=` is passed when there are several)."""

    def __init__(self, cfg: Config, dist: dist_utils.Dist, adapter, transformer: nn.Module | Mapping[str, nn.Module],
                 stages: list[StagePlan], run_dir: RunDir, save_lora: Callable[..., object]) -> None:
        self.cfg, self.dist, self.adapter = cfg, dist, adapter
        self.stages, self.run_dir, self.save_lora_fn = stages, run_dir, save_lora
        transformers = transformer if isinstance(transformer, Mapping) else {adapter.expert().name: transformer}
        self.total_steps = sum(s.steps for s in stages)
        partitions: list[str] = []
        several = len(transformers) > 1
        self.parts = [self._build(adapter.expert(name), model, partitions, several)
                      for name, model in transformers.items()]
        if dist.rank == 0 and any(partitions):
            run_dir.path.mkdir(parents=True, exist_ok=True)
            (run_dir.path / "pipeline.txt").write_text("".join(partitions), encoding="utf-8")
        # The one-expert names (the tests, benchmarks and --plan's measurement use them).
        self.transformer, self.engine, self.owned, self.swap = (self.parts[0].transformer, self.parts[0].engine,
                                                                self.parts[0].owned, self.parts[0].swap)
        self.step = 0
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk (None: none yet)
        self._stop = False
        self.previews = None  # engine.train.previews.Previews when training previews are on (set by the job)

    def _build(self, expert: Expert, transformer: nn.Module, partitions: list[str], several: bool) -> ExpertRun:
        """The expert's pipeline module, optimizer, schedule, block swap and DeepSpeed engine."""
        import deepspeed
        from deepspeed.pipe import PipelineModule
        from deepspeed.runtime.activation_checkpointing.checkpointing import non_reentrant_checkpoint

        cfg, t = self.cfg, self.cfg.training
        layers = pipeline_layers(self.adapter, t.pipeline_stages, expert.name)
        mixed_shapes = any(len(s.mix) > 1 for s in self.stages) or len(self.stages) > 1
        # DeepSpeed print()s its seeds, topology and layer partition on every run: kept in the run folder instead
        with contextlib.redirect_stdout(io.StringIO()) as partition:
            module = PipelineModule(
                layers=layers, num_stages=t.pipeline_stages, loss_fn=pipeline_loss, partition_method="parameters",
                activation_checkpoint_interval=1 if t.activation_checkpointing else 0,
                # DeepSpeed's own non-reentrant checkpoint: with any other function it assumes reentrant
                # checkpointing and makes every input require grad (17% more compute per step, measured).
                activation_checkpoint_func=non_reentrant_checkpoint,
                dynamic_shape=mixed_shapes and t.pipeline_stages > 1,
            )
        if partition.getvalue():
            partitions.append((f"# expert {expert.name}\n" if several else "") + partition.getvalue())
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = make_optimizer(params, cfg)
        schedule = functools.partial(lr_lambda, warmup=cfg.optimizer.warmup_steps, total=self.total_steps,
                                     kind=cfg.optimizer.lr_scheduler)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        swap = None
        if t.blocks_to_swap:
            # Only this stage's layers: the offloaded blocks stay on CPU and the engine must not move them.
            stage_layers = [f for f in module.forward_funcs if isinstance(f, nn.Module)]
            try:
                swap = enable_block_swap(stage_layers, t.blocks_to_swap, self.dist.device)
            except ValueError as e:
                raise UserError(f"training.blocks_to_swap = {t.blocks_to_swap}: {e}") from None
            engine = _engine_keeping_devices(module, optimizer, scheduler, ds_config(cfg))
        else:
            engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler,
                                                   config=ds_config(cfg))
        return ExpertRun(expert, transformer, module, engine, {id(p) for p in module.parameters()}, swap)

    # -- state ------------------------------------------------------------------------------------
    def lora_state(self, part: ExpertRun | None = None) -> dict | None:
        """The expert's full LoRA (peft keys), gathered from every pipeline stage on rank 0; None elsewhere."""
        part = part or self.parts[0]
        local = {LORA_DEFAULT.sub("", n): p for n, p in part.transformer.named_parameters()
                 if p.requires_grad and id(p) in part.owned}
        return dist_utils.gather_dicts(local)

    def save_checkpoint(self) -> None:
        """Every expert's stage state (first data-parallel replica of each stage), every rank's RNG, then - once all
        ranks are done - `latest`, so `latest` only ever names a complete checkpoint (engine.train.checkpoint)."""
        tag = ckpt.tag_for(self.step)
        folder = self.run_dir.checkpoints / tag
        error = None
        try:
            for part in self.parts:
                engine = part.engine
                if engine.grid.get_data_parallel_id() == 0:
                    tensors, meta = ckpt.stage_state(engine.module, engine.optimizer, engine.lr_scheduler, engine)
                    ckpt.save_stage(self._expert_folder(folder, part), engine.stage_id, tensors, meta)
            ckpt.save_rng(folder, self.dist.rank)
        except OSError as e:
            error = e
        self._raise_if_unwritten(error, folder)  # collective: also a barrier
        if self.dist.is_main:
            try:
                ckpt.save_run_state(folder, {"files": ckpt.list_files(folder), "step": self.step,
                                             "seed": self.cfg.seed, "experts": self._expert_names(),
                                             "pipeline_stages": self.cfg.training.pipeline_stages,
                                             "world_size": self.dist.world_size})
                ckpt.write_latest(self.run_dir.checkpoints, tag)
            except OSError as e:
                error = e
            else:
                self.run_dir.prune_checkpoints(keep=2)
        self._raise_if_unwritten(error, folder)
        self.saved_step = self.step

    def _raise_if_unwritten(self, error: OSError | None, folder: Path) -> None:
        """End every rank (a rank alone in a barrier would wait forever) when any could not write the checkpoint."""
        if not self._agree(error is not None):
            return
        kept = self.run_dir.latest_checkpoint_tag() if self.dist.is_main else None
        config = self.run_dir.path / "config.toml"
        back = (f"the previous checkpoint {kept} is kept: make room, then continue with: python train.py --config "
                f"{config} --resume {self.run_dir.path}") if kept else "no checkpoint is kept"
        why = (error.strerror or error) if error else "failed on another rank"
        raise UserError(f"could not write checkpoint {folder}: {why}; {back}")

    def load_checkpoint(self, checkpoints: Path, tag: str) -> None:
        """Continue from `checkpoints/<tag>`: weights, optimizer, schedule, step and RNG. Reads safetensors and JSON
        only; a folder with anything else (DeepSpeed's pickled `.pt` files) is refused, not opened."""
        folder = checkpoints / tag
        info = ckpt.read_run_state(folder)
        stages = self.cfg.training.pipeline_stages
        if info.get("experts") != self._expert_names() or info.get("pipeline_stages") != stages:
            raise ckpt.CheckpointError(
                f"{folder}: written for experts {info.get('experts')} on {info.get('pipeline_stages')} pipeline "
                f"stage(s); this run has {self._expert_names()} on {stages}: resume with the run's settings")
        if info.get("seed") != self.cfg.seed:
            warnings.warn(f"{folder}: written with seed {info.get('seed')}, this run has seed {self.cfg.seed}: the "
                          "resumed steps draw other noise than the interrupted run would have", stacklevel=2)
        for part in self.parts:
            engine = part.engine
            ckpt.load_stage(self._expert_folder(folder, part), engine.stage_id, engine.module, engine.optimizer,
                            engine.lr_scheduler, engine)
        if not ckpt.load_rng(folder, self.dist.rank) and self.cfg.adapter.dropout:
            warnings.warn(f"{folder}: no RNG state for rank {self.dist.rank}; LoRA dropout draws differ", stacklevel=2)
        self.step = self.saved_step = int(info["step"])

    def _expert_folder(self, folder: Path, part: ExpertRun) -> Path:
        return folder / part.expert.name if len(self.parts) > 1 else folder

    def _expert_names(self) -> list[str]:
        return [part.expert.name for part in self.parts]

    def request_stop(self) -> None:
        """Stop after the current step, with a checkpoint (what `stop` asks for, from this object)."""
        self._stop = True

    # -- loop -------------------------------------------------------------------------------------
    def run(self, progress: Progress | None = None, writer=None, stop: StopSignal | None = None) -> TrainResult:
        """Train from `step` to the end of the stages, reporting each step to `progress` (phase "train": loss,
        learning rate); when `stop` is set, checkpoint and return `interrupted`."""
        cfg, t = self.cfg, self.cfg.training
        progress = as_progress(progress)
        dp_rank = self.engine.grid.data_parallel_id
        times = TimeSampling(t.timestep_sample_method, t.shift, t.min_t, t.max_t)
        experts = [part.expert for part in self.parts]
        by_name = {part.expert.name: part for part in self.parts}
        start, losses, last_ckpt = time.time(), [], time.time()
        interrupted = False
        # a resumed run that had stopped early stops again at once: its preview history says so
        early = self._early_stop_reason()
        report(progress, "train", self.step, self.total_steps, self.stages[0].name if self.stages else "")
        offset = 0
        for stage in self.stages:
            stream = BatchStream(self.adapter, stage.pools, stage.mix, t.micro_batch_size_per_gpu, cfg.seed,
                                 dp_rank, times, t.edit_loss_weight, self.engine.device, experts=experts)
            while self.step < offset + stage.steps and not early:
                t0 = time.time()
                part = by_name[stream.expert_at(self.step).name]
                self._schedule(part)
                loss = float(part.engine.train_batch(stream.at(self.step)))
                self.step += 1
                losses.append(loss)
                label = stage.name + (f", expert {part.expert.name}" if len(self.parts) > 1 else "")
                report(progress, "train", self.step, self.total_steps, label, loss=loss,
                       lr=part.engine.get_lr()[0])
                self._log(writer, part, loss, time.time() - t0, stage.name, self._tokens_per_step(stage))
                if t.save_every_n_steps and self.step % t.save_every_n_steps == 0 and self.step < self.total_steps:
                    self._save_loras(f"lora_step{self.step:06d}.safetensors")
                if self.previews is not None and self.previews.due(self.step):
                    self._preview(writer, progress)
                    if early := self._early_stop_reason():
                        break
                due = (t.checkpoint_every_n_steps and self.step % t.checkpoint_every_n_steps == 0) or (
                    t.checkpoint_every_n_minutes and time.time() - last_ckpt > 60 * t.checkpoint_every_n_minutes)
                if self._agree(bool(due)):
                    self.save_checkpoint()
                    last_ckpt = time.time()
                if self._agree(self._stop or stop_requested(stop)):
                    self.save_checkpoint()
                    interrupted = True
                    break
            if interrupted or early:
                break
            offset += stage.steps
            if len(self.stages) > 1 and stage is not self.stages[-1] and self.step == offset:
                self._save_loras(f"lora_{stage.name}.safetensors")
        if not interrupted and self.saved_step != self.step:
            self.save_checkpoint()  # the finished state is on disk before the LoRA is: a failed write loses nothing
        if interrupted:
            loras, reason = {}, f"stopped on request at step {self.step} (resumable)"
        elif self.previews is None:
            loras, reason = self._save_loras("lora.safetensors", final=True), f"trained all {self.step} steps"
        else:
            loras = self._select_lora()
            reason = early or f"trained all {self.step} steps"
        lora_path = next(iter(loras.values()), None)
        return TrainResult(self.run_dir.path, self.step, losses[-1] if losses else self._logged_loss(), lora_path,
                           time.time() - start, losses, interrupted, loras, reason)

    # -- previews (engine.train.previews) ---------------------------------------------------------
    def _early_stop_reason(self) -> str:
        """Why the previews say to stop now ("" to go on); the same on every rank (each holds the history)."""
        if self.previews is None or not self.previews.patience:
            return ""
        last_stage_start = self.total_steps - self.stages[-1].steps
        return self.previews.early_stop_reason(last_stage_start) or ""

    def _preview(self, writer, progress: Progress | None) -> None:
        """The main rank previews and scores this step; every rank records the entry; a new best LoRA is written
        as lora_stepNNNNNN.safetensors (collective), and the previous best's file removed."""
        previous = self.previews.best()
        entry = None
        if self.dist.is_main:
            entry = self.previews.run(self.step, self.adapter, [p.transformer for p in self.parts], writer, progress)
        entry = dist_utils.broadcast(entry) if torch.distributed.get_world_size() > 1 else entry
        self.previews.history.append(entry)
        if not entry["best"]:
            return
        from engine.train.previews import lora_name

        self._save_loras(lora_name(self.step))
        every = self.cfg.training.save_every_n_steps
        if self.dist.is_main and previous is not None and not (every and previous["step"] % every == 0):
            for part in self.parts:  # the previous best, unless save_every_n_steps wants it anyway
                (self.run_dir.path / lora_file(lora_name(previous["step"]), part.expert)).unlink(missing_ok=True)

    def _select_lora(self) -> dict[str, Path]:
        """With previews: the last step's LoRA as lora_last.safetensors and the best-scoring one copied to
        lora.safetensors (the file infer.py and the page pick)."""
        import shutil

        from engine.train.previews import LAST_LORA, lora_name

        last = self._save_loras(LAST_LORA, final=True)
        best = self.previews.best()
        out = {}
        for part in self.parts:
            final = self.run_dir.path / lora_file("lora.safetensors", part.expert)
            chosen = self.run_dir.path / lora_file(lora_name(best["step"]), part.expert) if best else None
            if chosen is None or not chosen.is_file():  # no scored preview: the last step's, as without previews
                chosen = last[part.expert.name]
            if self.dist.is_main:
                with atomic_path(final) as tmp:
                    shutil.copyfile(chosen, tmp)
            out[part.expert.name] = final
        dist_utils.barrier()
        return out

    def _logged_loss(self) -> float:
        """The last loss metrics.jsonl holds (a resume that only writes the final LoRA trains no step itself)."""
        try:
            return float(json.loads((self.run_dir.path / "metrics.jsonl").read_text().splitlines()[-1])["loss"])
        except (OSError, ValueError, IndexError, KeyError, TypeError):
            return float("nan")

    def _schedule(self, part: ExpertRun) -> None:
        """With several experts each engine steps only on its own steps: set its learning rate from the run's
        step, so the schedule (warmup, decay) is the run's. One expert: the engine's own scheduler is that."""
        if len(self.parts) == 1:
            return
        o = self.cfg.optimizer
        factor = lr_lambda(self.step, o.warmup_steps, self.total_steps, o.lr_scheduler)
        for group in part.engine.optimizer.param_groups:
            group["lr"] = o.lr * factor

    def _tokens_per_step(self, stage: StagePlan) -> int:
        """Transformer tokens per optimizer step over all replicas (the video pool's shape; patch 1x2x2)."""
        c, f, h, w = next(iter(stage.pools.values()))[0].latents.shape
        t = self.cfg.training
        replicas = torch.distributed.get_world_size() // t.pipeline_stages
        return f * (h // 2) * (w // 2) * t.micro_batch_size_per_gpu * t.gradient_accumulation_steps * replicas

    def _agree(self, flag: bool) -> bool:
        """True on every rank if it is True on any (stop and checkpoint decisions must be collective)."""
        x = torch.tensor([1.0 if flag else 0.0])
        if torch.distributed.get_world_size() > 1:
            torch.distributed.all_reduce(x, op=torch.distributed.ReduceOp.MAX)
        return bool(x.item())

    def _save_loras(self, name: str, final: bool = False) -> dict[str, Path]:
        """Each expert's LoRA as `name` (with the expert's suffix); {expert name: path}. A failed write (disk full,
        file size limit) of the final LoRA ends the run with the way back: the checkpoint of this step is on disk,
        and `--resume` from it writes the LoRA again without training. An intermediate file only warns."""
        paths = {}
        for part in self.parts:
            state = self.lora_state(part)
            path = self.run_dir.path / lora_file(name, part.expert)
            error = None
            if self.dist.is_main:
                try:
                    if len(self.parts) > 1:
                        self.save_lora_fn(path, state, expert=part.expert)
                    else:
                        self.save_lora_fn(path, state)
                except OSError as e:
                    error = f"could not write {path}: {e.strerror or e}"
            error = dist_utils.broadcast(error)  # every rank ends, or none: no rank may wait in a barrier alone
            if error and final:
                config = self.run_dir.path / "config.toml"  # the run's resolved config, overrides included
                kept = self.run_dir.checkpoints / ckpt.tag_for(self.step)
                raise UserError(f"{error}. The finished training is kept in {kept}; "
                                f"make room, then write the LoRA (no training) with: python train.py --config {config} "
                                f"--resume {self.run_dir.path}")
            if error:
                warnings.warn(f"{error}; training goes on (the final LoRA and checkpoints are written later)",
                              stacklevel=2)
                continue
            paths[part.expert.name] = path
        return paths

    def replica_checksums(self) -> list[float]:
        """Sum of this rank's LoRA weights, from every rank: data-parallel replicas of a stage must agree."""
        local = sum(float(p.detach().double().sum()) for part in self.parts for p in part.engine.module.parameters()
                    if p.requires_grad)
        out = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, local)
        return out

    def _log(self, writer, part: ExpertRun, loss: float, seconds: float, stage: str, tokens: int) -> None:
        if not self.dist.is_main:
            return
        lr = part.engine.get_lr()[0]
        norm = part.engine.get_global_grad_norm()
        norm = None if norm is None else float(norm)
        record = {"step": self.step, "stage": stage, "loss": loss, "lr": lr, "grad_norm": norm,
                  "seconds": round(seconds, 4), "tokens_per_second": round(tokens / max(seconds, 1e-9), 1)}
        if len(self.parts) > 1:
            record["expert"] = part.expert.name
        with open(self.run_dir.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if writer is None:
            return
        writer.add_scalar("perf/tokens_per_second", record["tokens_per_second"], self.step)
        writer.add_scalar("train/loss", loss, self.step)
        writer.add_scalar("train/lr", lr, self.step)
        if norm is not None:
            writer.add_scalar("train/grad_norm", norm, self.step)
        writer.add_scalar("perf/step_seconds", seconds, self.step)
        if torch.cuda.is_available():
            writer.add_scalar("perf/max_memory_gb", torch.cuda.max_memory_allocated() / 2**30, self.step)
