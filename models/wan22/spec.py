"""Wan2.2-I2V-A14B's record in the family registry (see models.family).

Release facts (the Wan2.2 repository's `wan_i2v_A14B` config): boundary 0.900 on the sampler's timestep scale
(t >= 900 of 1000 -> the high-noise expert), sample_shift 5.0, 40 steps, guidance 3.5 per expert (written there as
the pair (low noise, high noise)), 81 frames at 16 fps, 480P and 720P, the Wan2.1 VAE, umT5-XXL, no CLIP.
"""

from __future__ import annotations

import math

from models.family import Expert, FamilySpec
from models.wan.spec import NEGATIVE_PROMPT
from models.wan.spec import SCHEDULER as WAN21_SCHEDULER

# The one place the split is written: sampler timesteps (after the shift, 0..1000) at or above it go to the
# high-noise expert. diffusers' WanImageToVideoPipeline compares `t >= boundary_ratio * num_train_timesteps` too.
BOUNDARY = 900.0
BOUNDARY_RATIO = BOUNDARY / 1000
GUIDANCE = 3.5  # each expert's (the release's sample_guide_scale = (3.5, 3.5))
SAMPLE_SHIFT = 5.0
# Expert order = diffusers' (`transformer` = high noise, `transformer_2` = low noise), which is also the order of
# model.transformer_path / model.transformer_2_path and inference.guidance / inference.guidance_2.
EXPERTS = (
    Expert("high_noise", BOUNDARY, math.inf, "_high_noise", guidance=GUIDANCE),
    Expert("low_noise", 0.0, BOUNDARY, "_low_noise", guidance=GUIDANCE),
)
SCHEDULER = {**WAN21_SCHEDULER, "flow_shift": SAMPLE_SHIFT}


def _detect(folder):  # noqa: ANN001, ANN202 (a Path -> int; imported lazily so the registry stays light)
    from models.wan22.layouts import detect_score

    return detect_score(folder)


SPEC = FamilySpec(
    name="wan2.2-i2v-a14b", title="Wan2.2-I2V-A14B",
    adapter="models.wan22.adapter:Wan22Adapter", lora_formats="models.wan.lora_formats",
    plan="models.wan22.plan:PLAN", tiny="models.wan22.tiny:build_tiny_wan22",
    tiny_command="python -m tools.make_tiny_model --family wan2.2-i2v-a14b --layout diffusers --out OUT",
    detect=_detect, layouts=("diffusers", "original", "single-file"),
    default_size=(832, 480), default_fps=16.0, default_frames=81, scheduler="unipc", scheduler_config=SCHEDULER,
    negative_prompt=NEGATIVE_PROMPT, experts=EXPERTS, default_steps=40, default_guidance=GUIDANCE,
    default_train_shift=SAMPLE_SHIFT,
)
