"""Resumable training checkpoints in safetensors + JSON only: nothing read on `--resume` can run code.

DeepSpeed's own `save_checkpoint` / `load_checkpoint` pickle their state (`torch.load(weights_only=False)`), so a
crafted checkpoint folder would execute code on resume. This module writes what a resume needs itself:

    checkpoints/latest                       the newest complete checkpoint's tag ("step000050"), written last
    checkpoints/step000050/state.json        step, seed, layout (experts, pipeline stages, world size), format
    checkpoints/step000050/[<expert>/]stage<S>.safetensors   the stage's LoRA weights and optimizer tensors
    checkpoints/step000050/[<expert>/]stage<S>.json          optimizer hyper-parameters and scalars, the
                                                             lr schedule's position, the engine's counters
    checkpoints/step000050/rng/rank<R>.safetensors           each process's torch RNG state (LoRA dropout)

Data order and noise need no state (engine.train.batches draws them from (seed, rank, step)). Data-parallel
replicas of a stage hold the same weights, so the first replica writes the stage's files and every replica reads
them. Reading uses only `safetensors` and `json`; anything else in the folder (a `.pt` file) is refused, never
opened.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from config.atomic import atomic_path, write_atomic
from config.errors import UserError

FORMAT = "lora-edit-checkpoint/1"
TAG = re.compile(r"^step\d{6,7}$")
LATEST = "latest"


class CheckpointError(UserError):
    """A checkpoint that cannot be resumed from (missing, damaged, foreign, or written by another layout)."""


def tag_for(step: int) -> str:
    return f"step{step:06d}"


def read_latest(checkpoints: Path) -> str | None:
    """The tag `checkpoints/latest` names, or None without one. The tag becomes a path: only `stepNNNNNN`."""
    latest = checkpoints / LATEST
    if not latest.is_file():
        return None
    tag = latest.read_text(encoding="utf-8", errors="replace").strip()
    if not TAG.match(tag):
        raise CheckpointError(f"{latest}: names {tag[:60]!r}, not a checkpoint tag like 'step000050'")
    return tag


def write_latest(checkpoints: Path, tag: str) -> None:
    write_atomic(checkpoints / LATEST, tag)


# -- saving ---------------------------------------------------------------------------------------------------------
def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    try:
        json.dumps(value)
    except TypeError:
        raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a JSON checkpoint") from None
    return value


def stage_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, engine: Any
                ) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON) for one pipeline stage: trainable weights by parameter name, the optimizer's per-parameter
    state (by the same names, not positions), its param groups, the schedule's and the engine's counters."""
    names = {id(p): n for n, p in module.named_parameters() if p.requires_grad}
    tensors = {f"param/{n}": p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}
    sd = optimizer.state_dict()
    index_to_name = {}
    for group, saved in zip(optimizer.param_groups, sd["param_groups"], strict=True):
        for p, i in zip(group["params"], saved["params"], strict=True):
            index_to_name[i] = names[id(p)]
    scalars: dict[str, dict] = {}
    for i, state in sd["state"].items():
        name = index_to_name[i]
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{name}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(name, {})[key] = _jsonable(value, f"optimizer state {key}")
    groups = [{**{k: _jsonable(v, f"param group {k}") for k, v in g.items() if k != "params"},
               "params": [index_to_name[i] for i in g["params"]]} for g in sd["param_groups"]]
    meta = {
        "optimizer": {"param_groups": groups, "scalars": scalars},
        "scheduler": {k: _jsonable(v, f"lr schedule {k}") for k, v in scheduler.state_dict().items()},
        "engine": {k: int(getattr(engine, k, 0)) for k in ("global_steps", "global_samples", "skipped_steps")},
    }
    return tensors, meta


def save_stage(folder: Path, stage: int, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / f"stage{stage}.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    write_atomic(folder / f"stage{stage}.json", json.dumps(meta))


def save_rng(folder: Path, rank: int) -> None:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    (folder / "rng").mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "rng" / f"rank{rank}.safetensors") as tmp:
        save_file(state, str(tmp))


def save_run_state(folder: Path, info: dict) -> None:
    write_atomic(folder / "state.json", json.dumps({"format": FORMAT, **info}, indent=1))


# -- loading --------------------------------------------------------------------------------------------------------
def _refuse_foreign(folder: Path, expected: Path) -> None:
    pickled = sorted(p.name for p in folder.rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt"))
    if pickled:
        raise CheckpointError(
            f"{folder}: holds {', '.join(pickled[:3])} but not {expected.name}: pickle files (DeepSpeed's or any "
            "other) can run code when read, so --resume reads only this project's safetensors + JSON checkpoints "
            "and never opens them")
    raise CheckpointError(f"{folder}: incomplete checkpoint, {expected.name} is missing")


def read_json(path: Path, folder: Path) -> dict:
    if not path.is_file():
        _refuse_foreign(folder, path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable JSON checkpoint file ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a checkpoint file (expected a JSON object)")
    return data


def read_tensors(path: Path, folder: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        _refuse_foreign(folder, path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged or not a safetensors file ({e})") from None


def read_run_state(folder: Path) -> dict:
    info = read_json(folder / "state.json", folder)
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{folder / 'state.json'}: format {info.get('format')!r}, expected {FORMAT!r}")
    return info


def list_files(folder: Path) -> list[str]:
    """The checkpoint's files (relative), as state.json records them for `verify`."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith(".") and p.name != "state.json")


def verify(folder: Path) -> dict:
    """Check a checkpoint before any heavy work: state.json, and every file it lists present and readable as JSON
    or a safetensors header. Returns the run state. Nothing else in the folder is opened."""
    info = read_run_state(folder)
    files = info.get("files")
    if not isinstance(files, list) or not files:
        raise CheckpointError(f"{folder / 'state.json'}: lists no checkpoint files")
    for name in files:
        path = folder / str(name)
        if not isinstance(name, str) or ".." in Path(name).parts or Path(name).is_absolute() or (
                path.suffix not in (".json", ".safetensors")):
            raise CheckpointError(f"{folder / 'state.json'}: lists {name!r}, not a checkpoint file name")
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (the checkpoint is incomplete)")
        if path.suffix == ".json":
            read_json(path, folder)
            continue
        try:
            with safe_open(str(path), framework="pt"):  # opening reads and checks the header; nothing more needed
                pass
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: damaged or not a safetensors file ({e})") from None
    return info


def load_stage(folder: Path, stage: int, module: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
               engine: Any) -> None:
    """Put a stage's saved weights, optimizer and schedule state back (the module must match in names and shapes)."""
    path = folder / f"stage{stage}.safetensors"
    tensors, meta = read_tensors(path, folder), read_json(folder / f"stage{stage}.json", folder)
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    saved = {k.removeprefix("param/"): v for k, v in tensors.items() if k.startswith("param/")}
    if saved.keys() != params.keys():
        missing, extra = sorted(params.keys() - saved.keys()), sorted(saved.keys() - params.keys())
        raise CheckpointError(f"{path}: its LoRA does not match this run's (missing {missing[:2]}, unexpected "
                              f"{extra[:2]}); was it written with other adapter settings?")
    for name, p in params.items():
        if saved[name].shape != p.shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(saved[name].shape)}, this run's LoRA "
                                  f"{tuple(p.shape)} (another adapter.rank?)")
    try:
        opt, groups = meta["optimizer"], meta["optimizer"]["param_groups"]
        position = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
        names = {n: position[id(p)] for n, p in params.items()}
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                name, field = key.removeprefix("optimizer/").rsplit("/", 1)
                state.setdefault(names[name], {})[field] = value
        for name, values in opt["scalars"].items():
            state.setdefault(names[name], {}).update(values)
        current = optimizer.param_groups
        restored = [{**{k: tuple(v) if isinstance(current[j].get(k), tuple) else v for k, v in g.items()},
                     "params": [names[n] for n in g["params"]]} for j, g in enumerate(groups)]
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name].to(p.dtype))
        optimizer.load_state_dict({"state": state, "param_groups": restored})
        scheduler.load_state_dict(meta["scheduler"])
        for key, value in meta["engine"].items():
            setattr(engine, key, int(value))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise CheckpointError(f"{folder / f'stage{stage}.json'}: does not fit this run's optimizer ({e!r})") from None


def load_rng(folder: Path, rank: int) -> bool:
    """This process's RNG state, if the checkpoint has one for its rank (False when not: another world size)."""
    path = folder / "rng" / f"rank{rank}.safetensors"
    if not path.is_file():
        return False
    state = read_tensors(path, folder)
    try:
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not an RNG state ({e})") from None
    return True
