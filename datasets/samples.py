"""The sample builder: (V_condition, M_condition, V_target, prompt) for every training mode and inference.

Inputs are plain arrays already aligned by the media layer: frames uint8 [T, H, W, 3] and the user's
edit mask bool [T, H, W] (True = may change). Outputs follow DESIGN.md's data contract:

- `v_condition` [3, T, H, W] in [-1, 1], exactly 0.0 where `m_condition` is 0 (Wan's empty-frame value;
  `with_fill` puts black or noise there instead, an option the toy ablation measures);
- `m_condition` [1, T, H, W] in {0, 1}, 1 = preserve, 0 = generate;
- `v_target` [3, T, H, W] in [-1, 1] (None for inference);
- `prompt` = trigger + caption; `clip_image` = frame 0 of `v_condition`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from masks.presets import preset_keep_mask

#: training modes -> the mask preset they train with (paper Sec. 3.1 and 3.3.1)
MODE_PRESETS = {"loraedit": "loraedit", "naive": "i2v"}
#: what the condition shows where the model generates: Wan's own empty value (0.0, mid-gray), black, noise
CONDITION_FILLS = ("gray", "black", "noise")


@dataclass
class Sample:
    v_condition: torch.Tensor
    m_condition: torch.Tensor
    v_target: torch.Tensor | None
    prompt: str
    clip_image: torch.Tensor
    kind: str  # "video" | "reference" | "inference"
    name: str
    span: tuple[int, int]  # the job frames [start, end) this sample covers

    @property
    def num_frames(self) -> int:
        return int(self.m_condition.shape[1])


def join_prompt(trigger: str, caption: str) -> str:
    """The paper's [p*] + c: the trigger, a space, the caption (either may be empty)."""
    return " ".join(p for p in (trigger.strip(), caption.strip()) if p)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [3, T, H, W] in [-1, 1]."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def _check_aligned(frames: np.ndarray, edit_mask: np.ndarray) -> None:
    if frames.shape[:3] != edit_mask.shape:
        raise ValueError(f"frames {frames.shape[:3]} and mask {edit_mask.shape} are not aligned")


def condition_sample(
    target: np.ndarray, condition: np.ndarray, edit_mask: np.ndarray, preset: str, prompt: str, kind: str, name: str,
    with_target: bool = True, start: int = 0,
) -> Sample:
    """The one constructor: condition frames masked by the preset's keep-mask, target as given."""
    _check_aligned(condition, edit_mask)
    m = preset_keep_mask(preset, edit_mask).float()
    v_condition = to_tensor(condition) * m  # regions to generate become exactly 0.0
    return Sample(
        v_condition=v_condition,
        m_condition=m,
        v_target=to_tensor(target) if with_target else None,
        prompt=prompt,
        clip_image=v_condition[:, 0].clone(),
        kind=kind,
        name=name,
        span=(start, start + len(condition)),
    )


def video_sample(source: np.ndarray, edit_mask: np.ndarray, prompt: str, mode: str = "loraedit",
                 name: str = "video", start: int = 0) -> Sample:
    """Sec. 3.3.1 (`loraedit`) or Sec. 3.1 (`naive`): reconstruct the source from its masked self."""
    if mode not in MODE_PRESETS:
        raise ValueError(f"unknown training mode {mode!r}; valid: {', '.join(MODE_PRESETS)}")
    return condition_sample(source, source, edit_mask, MODE_PRESETS[mode], prompt, "video", name, start=start)


def reference_sample(original: np.ndarray, edited: np.ndarray, edit_mask: np.ndarray, prompt: str,
                     index: int) -> Sample:
    """Sec. 3.3.2: one frame; target = the edited frame, condition = the original with the edit region emptied.

    `original` and `edited` are [H, W, 3] uint8 of job frame `index`, `edit_mask` its [H, W] mask.
    """
    if original.shape != edited.shape:
        raise ValueError(f"edited frame {edited.shape} does not match its source frame {original.shape}")
    return condition_sample(edited[None], original[None], edit_mask[None], "reference", prompt, "reference",
                            f"reference_{index}", start=index)


def short_clip_ranges(num_frames: int, clip_frames: int = 13, overlap: int = 1) -> list[tuple[int, int]]:
    """Half-open frame ranges of the low-cost mode (Sec. 4.5): 49, 13, 1 -> [0,13) [12,25) [24,37) [36,49).

    The last clip is moved back to end at the last frame when the stride does not divide evenly, so every
    frame is covered and every clip has `clip_frames` frames.
    """
    if (clip_frames - 1) % 4 or clip_frames > num_frames:
        raise ValueError(f"clip_frames must be 4k+1 and at most {num_frames}, got {clip_frames}")
    if not 0 <= overlap < clip_frames:
        raise ValueError(f"overlap must be in [0, {clip_frames}), got {overlap}")
    stride = clip_frames - overlap
    starts = list(range(0, num_frames - clip_frames + 1, stride))
    if starts[-1] + clip_frames < num_frames:
        starts.append(num_frames - clip_frames)
    return [(s, s + clip_frames) for s in starts]


def short_clip_samples(source: np.ndarray, edit_mask: np.ndarray, prompt: str, clip_frames: int = 13,
                       overlap: int = 1, mode: str = "loraedit") -> list[Sample]:
    """Each short clip is a `video` sample of its own (its first frame is the one kept whole)."""
    return [
        video_sample(source[a:b], edit_mask[a:b], prompt, mode, name=f"clip_{a}-{b - 1}", start=a)
        for a, b in short_clip_ranges(len(source), clip_frames, overlap)
    ]


def inference_sample(source: np.ndarray, edit_mask: np.ndarray, edited_first: np.ndarray, prompt: str,
                     preset: str = "loraedit") -> Sample:
    """The training condition with frame 0 replaced by the edited first frame (same mask as training)."""
    if edited_first.shape != source.shape[1:]:
        raise ValueError(f"edited first frame {edited_first.shape} does not match the job's frames {source.shape[1:]}")
    condition = source.copy()
    condition[0] = edited_first
    return condition_sample(condition, condition, edit_mask, preset, prompt, "inference", "inference",
                            with_target=False)


def with_fill(sample: Sample, fill: str, seed: int = 0) -> Sample:
    """`sample` with its generated regions (m_condition = 0) shown as `fill` instead of 0.0. "noise" is uniform
    in [-1, 1], drawn from `seed` and the sample's name, so training and inference see the same noise."""
    if fill == "gray":
        return sample
    if fill not in CONDITION_FILLS:
        raise ValueError(f"unknown condition fill {fill!r}; valid: {', '.join(CONDITION_FILLS)}")
    if fill == "black":
        value = torch.full_like(sample.v_condition, -1.0)
    else:
        g = torch.Generator().manual_seed(seed * 1_000_003 + sum(map(ord, sample.name)))
        value = torch.rand(sample.v_condition.shape, generator=g) * 2 - 1
    v = sample.v_condition + value * (1 - sample.m_condition)
    return dataclasses.replace(sample, v_condition=v, clip_image=v[:, 0].clone())


def recolor_region(frames: np.ndarray, edit_mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The frames with one random appearance change applied inside the edit mask, the same in every frame:
    a hue rotation (60-300 degrees), saturation and brightness scaled, sometimes inverted. Outside the mask
    the frames are unchanged. Training on such copies beside the clip (`training.appearance_augment`) keeps a
    LoRA from tying the edit region's motion to the source's colors."""
    angle = np.deg2rad(rng.uniform(60, 300))
    sat, gain, invert = rng.uniform(0.6, 1.4), rng.uniform(0.75, 1.25), rng.random() < 0.25
    # Hue rotation about the gray axis in YIQ space, with the chroma scaled by `sat`.
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, s = np.cos(angle) * sat, np.sin(angle) * sat
    turn = np.array([[gain, 0, 0], [0, c, -s], [0, s, c]])
    matrix = np.linalg.inv(to_yiq) @ turn @ to_yiq
    pixels = frames[edit_mask].astype(np.float64) / 255.0
    if invert:
        pixels = 1.0 - pixels
    out = frames.copy()
    out[edit_mask] = np.clip(np.round(pixels @ matrix.T * 255.0), 0, 255).astype(np.uint8)
    return out
