"""infer.py's job function `run_inference`: inputs checked, generation, composite, outputs staged and committed,
sidecar, replay.

The sidecar (`result.json`) holds the resolved config with every default filled in (seed, steps,
guidance, shift, scheduler, negative prompt, preset), the prompt, the LoRAs with weights and sha256,
digests of the conditioning inputs and of the frames. `--replay result.json` rebuilds the run from it
and says whether the frames came out identical.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import tomli_w
import torch

from config.atomic import ensure_output_folder
from config.errors import UserError
from config.loader import load_config, to_dict
from config.progress import Progress, as_progress
from config.schema import Config
from engine.infer import outputs
from engine.infer.chain import generate_job
from engine.infer.generate import Generation, LoraSpec, Request, build_request, load_inputs, resolve_loras
from models.registry import family

SIDECAR = "result.json"
SIDECAR_VERSION = 1


class ReplayError(UserError):
    """A sidecar that cannot be replayed, or inputs that changed since it was written."""


@dataclass
class Replay:
    path: Path
    data: dict

    @property
    def loras(self) -> list[LoraSpec]:
        return [LoraSpec(Path(x["path"]), float(x["weight"]), x.get("expert")) for x in self.data["loras"]]


def default_out(cfg: Config) -> Path:
    if cfg.inference.out:
        return Path(cfg.inference.out)
    return (Path(cfg.source).parent if cfg.source else Path.cwd()) / "results"


def read_replay(path: str | Path) -> Replay:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReplayError(f"--replay {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReplayError(f"--replay {path}: not a readable result.json ({e})") from None
    missing = [k for k in ("version", "config", "loras", "prompt", "input_digest", "frames_sha256") if k not in data]
    if missing or data.get("version") != SIDECAR_VERSION:
        raise ReplayError(f"--replay {path}: not an infer.py sidecar of version {SIDECAR_VERSION} "
                          f"(missing {', '.join(missing) or 'nothing'}, version {data.get('version')!r})")
    return Replay(path, data)


def replay_config(replay: Replay, overrides: list[str]) -> Config:
    """The sidecar's resolved config (absolute paths, every key), with the command line's overrides on top."""
    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / "replay.toml"
        toml.write_text(tomli_w.dumps(replay.data["config"]), encoding="utf-8")
        cfg = load_config(toml, overrides)
    cfg.source = str(replay.path)
    return cfg


def _check_replay(replay: Replay, request: Request, digest: str, lora_sha: list[str]) -> None:
    """Refuse a replay that cannot give the same frames because an input file changed."""
    recorded = replay.data["loras"]
    if [str(s.path) for s in request.loras] == [x["path"] for x in recorded]:
        for spec, sha, rec in zip(request.loras, lora_sha, recorded):
            if sha != rec["sha256"]:
                raise ReplayError(f"--replay: LoRA {spec.path} changed since {replay.path} was written "
                                  f"(sha256 {sha[:12]}..., recorded {rec['sha256'][:12]}...)")
    if digest != replay.data["input_digest"]:
        raise ReplayError(f"--replay: the conditioning inputs differ from {replay.path}'s (the source clip, mask, "
                          "edited frame, preset or prompt changed)")


def _resolved_config(cfg: Config, request: Request, out: Path) -> Config:
    """The config with every 'use the default' value replaced by what was used (the sidecar's copy)."""
    cfg = copy.deepcopy(cfg)
    inf = cfg.inference
    inf.shift, inf.negative_prompt, inf.out = request.sampler.shift, request.negative_prompt, str(out)
    inf.scheduler = request.sampler.scheduler
    inf.lora = ""  # the LoRAs are listed (with weights and checksums) in the sidecar itself
    cfg.seed = request.seed
    return cfg


def sidecar(cfg: Config, request: Request, gen: Generation, lora_sha: list[str], frames_sha: str,
            composite: bool) -> dict:
    s = request.sampler
    w, h = gen.job.size
    return {
        "version": SIDECAR_VERSION, "software": "lora-edit infer.py",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "prompt": gen.sample.prompt, "negative_prompt": request.negative_prompt, "seed": request.seed,
        "steps": s.steps, "guidance": s.guidance, "expert_guidance": dict(s.expert_guidance), "shift": s.shift,
        "scheduler": s.scheduler,
        "scheduler_config": family(cfg.model.type).scheduler_config_for(cfg.model.ckpt_path),
        "step_cache": s.step_cache, "step_cache_threshold": s.step_cache_threshold,
        "mask_preset": request.preset,
        "loras": [{"path": str(spec.path), "weight": spec.weight, "sha256": sha,
                   **({"expert": spec.expert} if spec.expert else {})}
                  for spec, sha in zip(request.loras, lora_sha)],
        "edited_frame": {"path": cfg.data.edited_frame, "sha256": outputs.sha256_file(cfg.data.edited_frame)},
        "composite": composite, "composite_feather": cfg.inference.composite_feather,
        "frames": int(gen.frames.shape[0]), "width": w, "height": h, "fps": gen.job.fps,
        "input_digest": gen.input_digest, "frames_sha256": frames_sha,
        "weights_identity": gen.weights_identity, "dtype": cfg.model.dtype,
        "device": gen.device,
        "versions": _versions(), "seconds": {k: round(v, 3) for k, v in gen.seconds.items()},
        "config": to_dict(cfg),
    }


def _versions() -> dict[str, str]:
    import diffusers
    import peft
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}


@dataclass
class InferResult:
    """What one generation wrote: the output folder, each file by kind ("video", "side_by_side", "generated",
    "frames", "sidecar"), where the time went, the LoRAs used and, for a replay, whether the frames matched."""

    out: Path
    video: Path
    files: dict[str, str]
    seconds: dict[str, float]
    frames_sha256: str
    loras: list[LoraSpec]
    lora_note: str
    summary: str  # the one line infer.py prints
    replay_identical: bool | None = None


def run_inference(cfg: Config, loras: list[LoraSpec] | None = None, prompt: str | None = None,
                  frames_dir: Path | None = None, replay: Replay | None = None,
                  progress: Progress | None = None) -> InferResult:
    """Generate and write the outputs (infer.py's job).

    `loras`: the LoRAs to apply; None resolves them as infer.py does without --lora (inference.lora, else the
    newest of this job's runs). `progress` hears of encoding, every denoising step and the writing. Raises UserError
    for bad input before any model loads; prints nothing and installs no signal handler.
    """
    start = time.perf_counter()
    progress = as_progress(progress)
    note = "LoRA: " + ", ".join(s.describe() for s in loras) if loras else "no LoRA: base model only"
    if loras is None:
        loras, note = resolve_loras(cfg, None)
    request = build_request(cfg, loras, prompt)
    out = ensure_output_folder(default_out(cfg), "inference.out (--out)")
    if frames_dir is None and cfg.inference.save_frames:
        frames_dir = out / "frames"
    if frames_dir is not None:
        outputs.check_frames_dir(frames_dir)
    inputs = load_inputs(cfg, request)
    lora_sha = [outputs.sha256_file(s.path) for s in request.loras]
    if replay is not None:
        _check_replay(replay, request, inputs.digest, lora_sha)
    gen = generate_job(cfg, request, progress=progress, inputs=inputs)  # one pass, or window by window

    composite = cfg.inference.composite
    frames = gen.frames
    if composite:
        frames = outputs.composite(gen.frames, gen.background, gen.generate_mask, cfg.inference.composite_feather)
    frames_sha = outputs.frames_digest(frames)
    resolved = _resolved_config(cfg, request, out)
    data = sidecar(resolved, request, gen, lora_sha, frames_sha, composite)
    with outputs.staging(out) as stage:
        files = outputs.write_results(
            stage, frames, gen.job.fps, frames_dir=frames_dir, sidecar=data, raw=gen.frames if composite else None,
            source=gen.job.frames if cfg.inference.side_by_side else None, generate=gen.generate_mask)

    names = ", ".join((Path(p).name if Path(p).parent == out else p) + ("/" if k == "frames" else "")
                      for k, p in files.items() if k != "video")
    seconds = {**gen.seconds, "total": time.perf_counter() - start}
    line = (f"done in {seconds['total']:.1f}s (denoise {gen.seconds['denoise']:.1f}s, "
            f"{request.sampler.steps} steps): {out / 'result.mp4'}" + (f" + {names}" if names else ""))
    same = None
    if replay is not None:
        same = frames_sha == replay.data["frames_sha256"]
        line += f"; replay of {replay.path}: " + ("identical frames" if same else "FRAMES DIFFER")
        if not same:
            warnings.warn(f"replay differs from {replay.path} (recorded on {replay.data.get('device')}, "
                          f"versions {replay.data.get('versions')})", stacklevel=2)
    return InferResult(out, out / "result.mp4", files, seconds, frames_sha, list(request.loras), note, line, same)
