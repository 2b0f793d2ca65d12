"""HunyuanVideo-I2V's (33-channel) record in the family registry (see models.family)."""

from __future__ import annotations

from models.family import FamilySpec, release_detector

ORIGINAL_MODEL_DIR = "hunyuan-video-i2v-720p"  # the original release's model folder: what marks its ckpts folder

# HunyuanVideo-I2V's standard negative prompt for image-to-video (its release's NEGATIVE_PROMPT_I2V).
NEGATIVE_PROMPT = "deformation, a poor composition and deformed video, bad teeth, bad eyes, bad limbs"

# Its scheduler (FlowMatchEuler, shift 7.0: diffusers' conversion default and the release's), for folders without
# a scheduler config (the original release layout).
SCHEDULER = {"num_train_timesteps": 1000, "shift": 7.0}


# Size: the release's 720p bucket scaled to ~368p, as in the paper; 24 fps, the release's rate.
SPEC = FamilySpec(
    name="hunyuan_video", title="HunyuanVideo-I2V (33-channel)",
    adapter="models.hunyuan_video.adapter:HunyuanVideoAdapter", lora_formats="models.hunyuan_video.lora_formats",
    plan="models.hunyuan_video.plan:PLAN", tiny="models.hunyuan_video.tiny:build_tiny_hunyuan",
    tiny_command="python -m tools.make_tiny_hunyuan --layout diffusers --out OUT",
    detect=release_detector("HunyuanVideo", ORIGINAL_MODEL_DIR),
    layouts=("diffusers", "original", "single-file"), default_size=(624, 368), default_fps=24.0, scheduler="euler",
    scheduler_config=SCHEDULER, negative_prompt=NEGATIVE_PROMPT,
)
