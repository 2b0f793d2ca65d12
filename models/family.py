"""What a model family is, as one record: `FamilySpec`, and the experts (transformers) it samples with.

A family is a folder in models/ (models/wan/, models/hunyuan_video/) plus one `FamilySpec` in its `spec.py`,
registered in models/registry.py. The record holds the family's facts as data (defaults, scheduler, negative
prompt, experts) and names its heavy parts as "module:attribute" strings (adapter, LoRA formats, planner,
tiny-model builder), so reading the registry imports no model code: the config, prepare.py's argument parsing
and family detection stay fast. Nothing outside a family's folder and this record knows about one family.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Expert:
    """One of a family's transformers and the sampler timesteps it serves: `low <= t < high` on the scale of the
    sampler's timesteps after the shift, 0..1000 (training hands the transformer `1000 * s` on the same scale).

    Most families have one expert serving every timestep. Wan2.2-I2V-A14B has two: a high-noise expert for
    t >= 900 and a low-noise one below. `name` is its component name (the adapter's `components` key,
    checkpoint subfolder); `suffix` goes into its LoRA file names (`lora{suffix}.safetensors`).
    """

    name: str = "transformer"
    low: float = 0.0
    high: float = math.inf
    suffix: str = ""
    guidance: float = 0.0  # the release's guidance for this expert; 0: the family's default_guidance

    def serves(self, timestep: float) -> bool:
        return self.low <= timestep < self.high

    def describe(self) -> str:
        """"high_noise (sampler timesteps t >= 900)": the expert and its share of the timestep scale, for people."""
        if self.low <= 0 and math.isinf(self.high):
            return f"{self.name} (every timestep)"
        if math.isinf(self.high):
            return f"{self.name} (sampler timesteps t >= {self.low:g})"
        if self.low <= 0:
            return f"{self.name} (sampler timesteps t < {self.high:g})"
        return f"{self.name} (sampler timesteps {self.low:g} <= t < {self.high:g})"


def flow_shift(scheduler_config: Mapping[str, Any], fallback: float = 3.0) -> float:
    """The flow shift a scheduler config sets (UniPC's `flow_shift`, FlowMatchEuler's `shift`)."""
    return float(scheduler_config.get("flow_shift", scheduler_config.get("shift", fallback)))


def resolve(ref: str) -> Any:
    """A "module:attribute" reference (or a "module" one) -> the object, imported now."""
    module, _, attr = ref.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attr) if attr else loaded


@dataclass(frozen=True)
class FamilySpec:
    """Everything the project needs to know about one model family (see the module doc)."""

    name: str  # model.type
    title: str  # for people: "Wan2.1-I2V"
    adapter: str  # "module:class" of its models.base.ModelAdapter
    lora_formats: str  # module of its LoRA file layouts: FORMATS, load_lora, save_lora, to_peft, check_fits
    plan: str  # "module:attribute" of its planner entry (engine.plan's PlanFamily)
    tiny: str  # "module:function" building a tiny random model: (out_dir, layout, seed=0) -> Path
    detect: Callable[[Path], int]  # how surely a weights folder holds this family: 0 = not at all
    layouts: tuple[str, ...]  # weight layouts its loader reads (and its tiny builder writes)
    default_size: tuple[int, int]  # (width, height) for landscape and square sources; portrait swaps them
    default_fps: float
    scheduler: str  # the sampler its reference pipeline uses ("unipc" or "euler"), for inference.scheduler = auto
    scheduler_config: Mapping[str, Any]  # its scheduler config (shift included) for folders that ship none
    negative_prompt: str  # its standard negative prompt, for inference.negative_prompt = ""
    default_frames: int = 49  # 4k+1 frames of a new job (prepare.py --frames)
    tiny_command: str = ""  # the command line that writes a tiny random model to OUT (named in missing-model errors)
    experts: tuple[Expert, ...] = field(default_factory=lambda: (Expert(),))
    default_steps: int = 50  # denoising steps where inference.steps is 0
    default_guidance: float = 5.0  # guidance where inference.guidance is 0 (an expert's own `guidance` first)
    default_train_shift: float = 1.0  # training.shift where it is 0 (Wan2.1: the paper's uniform times, no shift)

    # -- the heavy parts, imported on first use --------------------------------------------------
    def adapter_class(self) -> type:
        return resolve(self.adapter)

    def formats(self) -> ModuleType:
        return resolve(self.lora_formats)

    def planner(self) -> Any:
        return resolve(self.plan)

    def build_tiny(self, out_dir: str | Path, layout: str = "diffusers", seed: int = 0) -> Path:
        return resolve(self.tiny)(out_dir, layout, seed=seed)

    # -- facts --------------------------------------------------------------------------------------
    def size_for(self, src_w: int, src_h: int) -> tuple[int, int]:
        """The family's size for a source: landscape and square as given, portrait swapped."""
        w, h = self.default_size
        return (w, h) if src_w >= src_h else (h, w)

    @property
    def default_shift(self) -> float:
        return flow_shift(self.scheduler_config)

    def scheduler_config_for(self, ckpt_path: str | Path | None) -> dict:
        """`<ckpt>/scheduler/scheduler_config.json` when the weights folder has one, else the family's own."""
        path = Path(ckpt_path) / "scheduler" / "scheduler_config.json" if ckpt_path else None
        if path is not None and path.is_file():
            return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
        return dict(self.scheduler_config)

    def expert_for(self, timestep: float) -> Expert:
        """The expert serving a sampler timestep (0..1000 after the shift)."""
        for expert in self.experts:
            if expert.serves(float(timestep)):
                return expert
        raise ValueError(f"{self.title}: no expert serves timestep {float(timestep):g}")

    def guidance_of(self, expert: Expert) -> float:
        """The family's default guidance for `expert`."""
        return expert.guidance or self.default_guidance

    def expert(self, name: str | None) -> Expert:
        """The expert called `name`; None is the only one of a one-expert family."""
        if name is None:
            if len(self.experts) > 1:
                raise ValueError(f"{self.title} has {len(self.experts)} experts "
                                 f"({', '.join(e.name for e in self.experts)}): say which")
            return self.experts[0]
        for expert in self.experts:
            if expert.name == name:
                return expert
        raise ValueError(f"{self.title} has no expert {name!r}; its experts: {', '.join(e.name for e in self.experts)}")


def release_detector(pipeline_prefix: str, marker: str) -> Callable[[Path], int]:
    """A family's `detect` from what marks its folders: a diffusers model_index.json whose pipeline class starts
    with `pipeline_prefix`, or `marker`, a file or folder only its original release has. 1 when either says so;
    0 otherwise, and for a diffusers folder of another pipeline."""
    def detect(folder: Path) -> int:
        name = model_index_class(folder)
        if name is not None:
            return int(name.startswith(pipeline_prefix))
        return int((folder / marker).exists())

    return detect


def model_index_class(folder: Path) -> str | None:
    """`_class_name` of a diffusers folder's model_index.json: None without that file, "" when it is unreadable
    (a diffusers folder of no known family)."""
    index = folder / "model_index.json"
    if not index.is_file():
        return None
    try:
        return str(json.loads(index.read_text(encoding="utf-8")).get("_class_name", ""))
    except (OSError, ValueError, AttributeError):
        return ""
