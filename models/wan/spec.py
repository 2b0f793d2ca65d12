"""Wan2.1-I2V's record in the family registry: its facts as data, its code by reference (see models.family)."""

from __future__ import annotations

from models.family import FamilySpec, release_detector

ORIGINAL_VAE = "Wan2.1_VAE.pth"  # the original release's VAE file: what marks its folder

# Wan's standard negative prompt, which the reference pipeline and the paper's code both use.
NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

# Wan2.1-I2V's published scheduler config (Wan-AI/Wan2.1-I2V-14B-480P-Diffusers, scheduler/), used when the
# weights folder has none (the original release layout ships no scheduler config). Shift 3.0: 480P.
SCHEDULER = {
    "num_train_timesteps": 1000, "prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0,
    "solver_order": 2, "solver_type": "bh2", "predict_x0": True, "lower_order_final": True,
    "timestep_spacing": "linspace", "final_sigmas_type": "zero", "beta_schedule": "linear",
    "beta_start": 0.0001, "beta_end": 0.02,
}


SPEC = FamilySpec(
    name="wan", title="Wan2.1-I2V",
    adapter="models.wan.adapter:WanAdapter", lora_formats="models.wan.lora_formats", plan="models.wan.plan:PLAN",
    tiny="models.wan.tiny:build_tiny_wan",
    tiny_command="python -m tools.make_tiny_model --family wan-i2v --layout diffusers --out OUT",
    detect=release_detector("Wan", ORIGINAL_VAE), layouts=("diffusers", "original", "single-file"),
    default_size=(832, 480), default_fps=16.0, scheduler="unipc", scheduler_config=SCHEDULER,
    negative_prompt=NEGATIVE_PROMPT,
)
