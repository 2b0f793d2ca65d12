"""A test-only model family with two experts: two tiny Wan2.1-I2V transformers chosen by timestep.

It exists to hold the engine to its expert-aware contract before a real two-expert family (Wan2.2-I2V-A14B) is
added: training draws each step's expert, each expert gets its own LoRA file, the sampler switches transformers at
the boundary. It is registered like any family (one `FamilySpec`), so the contract suite (tests/test_contract.py)
runs on it too. Its folder is a tiny Wan diffusers folder plus `transformer_2/` (the low-noise expert, as diffusers
lays out Wan2.2) and `boundary_ratio` in model_index.json, which is what tells it from a Wan2.1 folder.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

from diffusers import WanTransformer3DModel

from models.family import Expert, FamilySpec, model_index_class
from models.registry import family, register
from models.wan.adapter import WanAdapter
from models.wan.spec import SPEC as WAN

NAME = "test_two_expert"
BOUNDARY = 800.0  # sampler timesteps >= 800 go to the high-noise expert (Wan2.2 I2V's is 900)
EXPERTS = (Expert("high_noise", BOUNDARY, math.inf, "_high_noise"), Expert("low_noise", 0.0, BOUNDARY, "_low_noise"))


class TwoExpertAdapter(WanAdapter):
    """Wan2.1's adapter with a second transformer: `transformer/` serves high noise, `transformer_2/` low."""

    family = NAME

    def build_transformer(self, expert: Expert) -> WanTransformer3DModel:
        sub = "transformer" if expert.name == "high_noise" else "transformer_2"
        return WanTransformer3DModel.from_pretrained(self.weights.root / sub, torch_dtype=self.dtype)

    def base_model_name(self) -> str:
        return "test-two-expert-" + super().base_model_name()


def detect(folder: Path) -> int:
    """2 (more specific than Wan2.1's claim on any Wan pipeline folder) when model_index.json has a boundary."""
    if model_index_class(folder) is None:
        return 0
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    return 2 if index.get("boundary_ratio") is not None and index.get("transformer_2") else 0


def build_tiny(out_dir: str | Path, layout: str = "diffusers", seed: int = 0) -> Path:
    """A tiny Wan2.1 diffusers folder whose second transformer (another seed) is the low-noise expert."""
    from models.wan.tiny import build_tiny_wan

    if layout != "diffusers":
        raise ValueError(f"{NAME}: only the diffusers layout, not {layout!r}")
    out = build_tiny_wan(out_dir, "diffusers", seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        other = build_tiny_wan(Path(tmp) / "other", "diffusers", seed=seed + 1)
        shutil.copytree(other / "transformer", out / "transformer_2")
    index = json.loads((out / "model_index.json").read_text())
    index.update(transformer_2=["diffusers", "WanTransformer3DModel"], boundary_ratio=BOUNDARY / 1000)
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


SPEC = FamilySpec(
    name=NAME, title="two-expert test family (tiny Wan2.1 twice)", adapter="two_expert:TwoExpertAdapter",
    lora_formats=WAN.lora_formats, plan=WAN.plan, tiny="two_expert:build_tiny", detect=detect, layouts=("diffusers",),
    default_size=WAN.default_size, default_fps=WAN.default_fps, scheduler=WAN.scheduler,
    scheduler_config=WAN.scheduler_config, negative_prompt=WAN.negative_prompt, experts=EXPERTS,
)


def ensure_registered() -> FamilySpec:
    """Register the family once per test session (the registry is process-wide)."""
    try:
        return family(NAME)
    except ValueError:
        return register(SPEC)
