"""The edit job's configuration: one dataclass per TOML section.

Every key has a default, a one-line doc and its constraints in the field metadata; `config.loader`
validates against them and `config.loader.render_toml` writes them back with their docs, so this
file is the single source of truth for what `edit.toml` may contain (examples/edit.toml is checked
against it by a test).

Path kinds: "in" must exist when set; "out" is created by us. Relative paths in a TOML file are
relative to that file's folder; relative paths given with `--set` are relative to the working dir.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from masks.presets import PRESETS
from models.family import FamilySpec
from models.registry import DEFAULT_FAMILY, families, names

MASK_PRESETS = PRESETS  # the paper's conditioning presets (masks.presets)
DTYPES = ("float32", "bfloat16", "float16")
# An edit LoRA takes hundreds of steps; a bound far above that catches typos (an extra 000) before a run that
# would never end, and keeps step numbers inside the 6-digit checkpoint and LoRA file names.
MAX_STEPS = 1_000_000


def _per_family(what: Callable[[FamilySpec], str]) -> str:
    """A default that depends on the model family, for the docs: each registered family's value."""
    return ", ".join(f"{spec.name}: {what(spec)}" for spec in families())


def opt(default: Any, doc: str, **constraints: Any) -> Any:
    """A config key: its default, its one-line doc and constraints (choices, min, max, path, length)."""
    meta = {"doc": doc, **constraints}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    type: str = opt(DEFAULT_FAMILY, "Base model family: " + " or ".join(spec.title for spec in families()) + ".",
                    choices=names)
    ckpt_path: str = opt(
        "", "Base model weights: a diffusers folder or the original release folder.", path="in"
    )
    transformer_path: str = opt(
        "", "Optional single-file transformer (ComfyUI style, bf16/fp16/fp8) overriding ckpt_path's; for a model with "
        "two experts the first one's (wan2.2-i2v-a14b: high noise).", path="in",
    )
    transformer_2_path: str = opt(
        "", "The second expert's single-file transformer, for a model with two (wan2.2-i2v-a14b: low noise).",
        path="in",
    )
    experts: list = opt(
        [], "Experts to train, by name (" + _per_family(lambda s: "/".join(e.name for e in s.experts)) + "); the "
        "timesteps drawn are clamped to theirs and the others get no LoRA. Empty: all.", item=str,
    )
    dtype: str = opt("bfloat16", "Compute dtype (float32 on CPU-only machines).", choices=DTYPES)
    transformer_dtype: str = opt(
        "", "Storage dtype of the frozen transformer weights; 'float8' halves memory. Empty: dtype.",
        choices=("", "float8", *DTYPES),
    )


@dataclass
class DataConfig:
    video: str = opt("", "The source clip (video file or image folder).", path="in")
    mask: str = opt(
        "", "Where the video may change: mask video, mask folder or one image. White = edit.",
        path="in",
    )
    edited_frame: str = opt("", "The edited first frame (image).", path="in")
    reference_frames: str = opt(
        "", "Folder of edited later frames for stage 2, named by job frame index (e.g. 24.png).",
        path="in",
    )
    caption: str = opt("", "Caption of the source clip, used for training.")
    edited_caption: str = opt("", "Caption of the edited frame, used for inference. Empty: caption.")
    trigger: str = opt("p3rs0n,", "Trigger token put before every caption (the paper's [p*]).")
    fps: float = opt(0.0, "Frame rate the clip is resampled to. 0: the model's ("
                     + _per_family(lambda s: f"{s.default_fps:g}") + ").", min=0.0, max=120.0)
    frames: int = opt(49, "Frames of the job: the model's window (4k+1, at most 81), or any length with data.window.",
                      min=1, max=100_000)
    window: int = opt(0, "Model window for clips longer than one pass (4k+1, at most 81): training samples windows "
                      "of this length, infer.py chains them. 0: data.frames is the window.", min=0, max=81)
    start: float = opt(0.0, "Start of the window in the source, in seconds.", min=0.0)
    width: int = opt(0, "Frame width, a multiple of 16. 0: the model's, landscape / portrait ("
                     + _per_family(lambda s: f"{s.default_size[0]} / {s.default_size[1]}") + ").", min=0)
    height: int = opt(0, "Frame height, a multiple of 16. 0: the model's, landscape / portrait ("
                      + _per_family(lambda s: f"{s.default_size[1]} / {s.default_size[0]}") + ").", min=0)
    resize_mode: str = opt("crop", "How the source is fitted to width x height.", choices=("crop", "pad"))
    mask_threshold: float = opt(0.5, "Mask pixels above this fraction of white are edit.", min=0.0, max=1.0)
    mask_dilate: int = opt(0, "Grow (>0) or shrink (<0) the edit mask by this many pixels.", min=-256, max=256)
    mask_bbox: bool = opt(False, "Turn the mask into bounding boxes (the reference implementation).")
    mask_bbox_enlarge: float = opt(0.1, "Relative enlargement of each bounding box.", min=0.0, max=2.0)
    latent_mask: str = opt(
        "min", "Pixel->latent mask downsampling: 'min' keeps a cell only if all its pixels are kept.",
        choices=("min", "nearest"),
    )
    condition_fill: str = opt(
        "gray", "What the condition video shows where the model generates: 'gray' (0.0, Wan's own empty value), "
        "'black' or 'noise'.", choices=("gray", "black", "noise"),
    )
    cache_dir: str = opt("cache", "Folder for cached latents and embeddings.", path="out")


@dataclass
class AdapterConfig:
    type: str = opt("lora", "Adapter type.", choices=("lora",))
    rank: int = opt(16, "LoRA rank.", min=1, max=1024)
    alpha: float = opt(0.0, "LoRA alpha. 0: same as rank.", min=0.0)
    dropout: float = opt(0.0, "LoRA dropout.", min=0.0, max=1.0)
    dtype: str = opt("float32", "Dtype of the trainable LoRA weights.", choices=DTYPES)
    train_image_kv: bool = opt(False, "Also train the image cross-attention k/v projections.")
    init_from_existing: str = opt("", "Start from this LoRA file instead of zeros.", path="in")
    save_format: str = opt(
        "comfyui", "LoRA key layout: 'comfyui' (original module names: ComfyUI and diffusers read it) or 'diffusers'.",
        choices=("comfyui", "diffusers"),
    )


@dataclass
class TrainingConfig:
    mode: str = opt(
        "loraedit", "'loraedit': mask-aware LoRA (Sec. 3.3); 'naive': plain I2V LoRA (Sec. 3.1).",
        choices=("loraedit", "naive"),
    )
    steps: int = opt(100, "Optimizer steps of stage 1 (the video).", min=0, max=MAX_STEPS)
    reference_steps: int = opt(100, "Optimizer steps of stage 2 (edited later frames), if any.", min=0,
                               max=MAX_STEPS)
    reference_ratio: float = opt(0.5, "Share of stage-2 samples that are reference frames.", min=0.0, max=1.0)
    first_frame_reference: bool = opt(
        False, "Also train on the edited first frame as a single-frame reference sample in stage 2 (Sec. 3.3.2 "
        "applied to frame 0; no extra user work).",
    )
    appearance_augment: int = opt(
        0, "Add this many copies of the clip with the edit region recolored (the same in every frame), so the LoRA "
        "learns the region's motion rather than the source's colors.", min=0, max=64,
    )
    random_windows: int = opt(
        4, "Long jobs (data.window): windows at random starts trained besides the ones inference cuts (drawn once "
        "from the seed; each is encoded once).", min=0, max=1000)
    low_cost: bool = opt(False, "Train on short overlapping clips instead of the whole window (Sec. 4.5).")
    clip_frames: int = opt(13, "Frames per short clip in low-cost mode (4k+1).", min=1, max=81)
    clip_overlap: int = opt(1, "Frames shared by consecutive short clips.", min=0)
    micro_batch_size_per_gpu: int = opt(1, "Samples per device per micro-step.", min=1)
    gradient_accumulation_steps: int = opt(1, "Micro-steps per optimizer step.", min=1)
    gradient_clipping: float = opt(1.0, "Max gradient norm; 0 disables clipping.", min=0.0)
    timestep_sample_method: str = opt(
        "uniform", "How the flow time s is drawn.", choices=("uniform", "logit_normal")
    )
    shift: float = opt(0.0, "Timestep shift s' = shift*s / (1 + (shift-1)*s); 1 = none. 0: the model's ("
                       + _per_family(lambda s: f"{s.default_train_shift:g}") + ").", min=0.0)
    min_t: float = opt(0.0, "Lower bound of the sampled flow time.", min=0.0, max=1.0)
    max_t: float = opt(1.0, "Upper bound of the sampled flow time.", min=0.0, max=1.0)
    edit_loss_weight: float = opt(1.0, "Loss weight of latent cells in the edit region (1 = none).", min=0.0)
    activation_checkpointing: bool = opt(True, "Recompute block activations in backward to save memory.")
    blocks_to_swap: int = opt(0, "Transformer blocks kept on CPU and moved in for their turn.", min=0)
    pipeline_stages: int = opt(1, "Pipeline-parallel stages (devices per model replica).", min=1)
    save_every_n_steps: int = opt(50, "Write a LoRA file every N steps (and at the end); 0: end only.", min=0)
    checkpoint_every_n_steps: int = opt(0, "Write a resumable engine checkpoint every N steps; 0: off.", min=0)
    checkpoint_every_n_minutes: float = opt(30.0, "Write a resumable checkpoint every N minutes; 0: off.", min=0.0)
    # Training previews (engine/train/previews.py; README "Previews and selection"): each one generates the edit
    # with the current LoRA, scores it without ground truth and keeps the best LoRA as lora.safetensors.
    preview_every_n_steps: int | str = opt(
        "off", "Preview the edit every N steps (and at the last step): 'off', 'auto' (4 per run, the measured "
        "budget) or N.", words=("off", "auto"), min=1, max=MAX_STEPS,
    )
    preview_steps: int = opt(10, "Sampler steps of a preview (cheap: inference.steps is for the result).", min=1,
                             max=1000)
    preview_guidance: float = opt(1.0, "Guidance of a preview (every expert's); 1 = one pass per step (no negative "
                                       "prompt).", min=0.0)
    preview_step_cache: bool = opt(True, "Reuse transformer outputs across similar preview steps (faster).")
    preview_frames: int = opt(0, "Frames of a preview (the job's first N, 4k+1); 0: all of the job's (a long job: "
                                 "its first window).", min=0,
                              max=81)
    preview_clip_model: str = opt("", "A local CLIP model folder: adds CLIP similarity of the edit region to the "
                                  "score.", path="in")
    preview_truth: str = opt("", "The exactly edited clip, when one exists (the toy jobs' truth/): its PSNR is "
                             "reported beside the scores, never used to select.", path="in")
    early_stop: int = opt(0, "Stop the last stage when the combined preview score has not improved for this many "
                          "previews; 0: off.", min=0, max=1000)


@dataclass
class OptimizerConfig:
    type: str = opt("adamw", "Optimizer; 'adamw8bit' needs bitsandbytes.", choices=("adamw", "adamw8bit"))
    lr: float = opt(1e-4, "Peak learning rate.", min=0.0)
    betas: list = opt([0.9, 0.99], "AdamW betas.", length=2, item=float, min=0.0, max=1.0)
    weight_decay: float = opt(0.01, "AdamW weight decay.", min=0.0)
    eps: float = opt(1e-8, "AdamW epsilon.", min=0.0)
    lr_scheduler: str = opt("constant", "Schedule after warmup.", choices=("constant", "linear", "cosine"))
    warmup_steps: int = opt(0, "Linear warmup steps.", min=0, max=MAX_STEPS)


@dataclass
class InferenceConfig:
    mask_preset: str = opt("loraedit", "Conditioning preset (see README's mask presets).", choices=MASK_PRESETS)
    lora: str = opt("", "LoRA file to apply. Empty: the newest LoRA of this job's runs.", path="in")
    lora_weight: float = opt(1.0, "Strength of the LoRA.")
    steps: int = opt(0, "Denoising steps (the paper: 30). 0: the model's ("
                     + _per_family(lambda s: str(s.default_steps)) + ").", min=0, max=1000)
    guidance: float = opt(0.0, "Classifier-free guidance scale (of the first expert, for a model with two); 1 "
                          "disables the negative pass. 0: the model's ("
                          + _per_family(lambda s: "/".join(f"{s.guidance_of(e):g}" for e in s.experts)) + ").",
                          min=0.0)
    guidance_2: float = opt(0.0, "Guidance of the second expert, for a model with two (wan2.2-i2v-a14b: low noise). "
                            "0: inference.guidance if set, else the model's.", min=0.0)
    shift: float = opt(0.0, "Flow shift of the sampler. 0: the model's default (the weights' scheduler config, "
                       f"else {_per_family(lambda s: f'{s.default_shift:g}')}).", min=0.0)
    scheduler: str = opt("auto", f"Sampler; auto: the model's own ({_per_family(lambda s: s.scheduler)}).",
                         choices=("unipc", "euler", "auto"))
    negative_prompt: str = opt("", "Negative prompt. Empty: the model family's standard one.")
    out: str = opt("", "Output folder. Empty: results/ beside the config.", path="out")
    save_frames: bool = opt(False, "Also write lossless PNG frames.")
    side_by_side: bool = opt(True, "Also write source | result | mask overlay as one mp4.")
    composite: bool = opt(False, "Paste the kept region back from the source (feathered).")
    composite_feather: int = opt(8, "Feather radius in pixels for composite.", min=0, max=256)
    window_overlap: int = opt(1, "Long jobs (data.window): frames each window takes whole from the one before "
                              "(1+4k), blended across.", min=1, max=81)
    window_anchor: str = opt(
        "source", "Long jobs: the kept region of the frames a window takes from the one before comes from "
        "'source' (re-anchored on the source's pixels) or is the 'generated' one as is.",
        choices=("source", "generated"))
    step_cache: bool = opt(False, "Reuse transformer outputs across similar steps (faster, approximate).")
    step_cache_threshold: float = opt(0.05, "Change below which a step's blocks are skipped.", min=0.0)


@dataclass
class Config:
    name: str = opt("edit", "Run name; outputs go to output_dir/name/<timestamp>/ (a relative path inside output_dir).")
    output_dir: str = opt("runs", "Where runs are written.", path="out")
    seed: int = opt(42, "Random seed for training noise and sampling.", min=0)
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"doc": "The base model."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "The job's media."})
    adapter: AdapterConfig = field(default_factory=AdapterConfig, metadata={"doc": "The LoRA."})
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata={"doc": "Training."})
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig, metadata={"doc": "Optimizer."})
    inference: InferenceConfig = field(default_factory=InferenceConfig, metadata={"doc": "Generation."})

    # Set by the loader, not a TOML key: the file this config came from (None when built in code).
    source: str | None = field(default=None, repr=False, compare=False, metadata={"internal": True})
