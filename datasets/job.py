"""A job's media, aligned: the config's `[data]` section -> frames, edit masks and edited frames.

Everything train.py, infer.py and the preview need starts here, so all three see the same frames:
the source resampled to `data.fps` from `data.start`, `data.frames` frames (4k+1), fitted to the
job's size; the mask read at the same source times with the same geometry (nearest); the edited
first frame and edited later frames mapped onto the job's pixels.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import media
from config.errors import UserError
from config.schema import Config
from datasets.samples import (
    Sample,
    inference_sample,
    join_prompt,
    recolor_region,
    reference_sample,
    short_clip_samples,
    video_sample,
    with_fill,
)
from datasets.windows import is_long, long_clip_samples
from masks import morphology
from masks.io import read_mask
from media import FitParams, MediaError
from models.registry import family


@dataclass
class Job:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    edit_mask: np.ndarray  # bool [T, H, W], True = may change
    fps: float
    fit: FitParams
    source_times: np.ndarray  # source timestamps of the picked frames (seconds)
    edited_first: np.ndarray | None = None  # uint8 [H, W, 3] on the job's pixels
    reference: dict[int, np.ndarray] = field(default_factory=dict)  # job frame index -> edited frame

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[2]), int(self.frames.shape[1])


def _too_short(path: Path, d, have: int) -> MediaError:
    return MediaError(
        f"{path}: too short for the window: {d.frames} frames at {d.fps:g} fps from {d.start:g}s need "
        f"{d.frames / d.fps:.2f}s, the clip gives {have} frames; lower data.frames (4k+1) or data.start"
    )


def load_source(cfg: Config) -> tuple[np.ndarray, np.ndarray, FitParams, float]:
    """The source window: (frames, source times, fit, source fps). Errors name the file."""
    d = cfg.data
    path = Path(d.video)
    times = media.target_times(d.fps, d.start, d.frames)
    if path.is_file() and path.suffix.lower() not in media.IMAGE_EXTS:
        try:  # decodes only up to the window's end and converts only the frames it picks
            clip = media.read_video_at(path, times)
        except MediaError as e:
            if "before the requested time" not in str(e):
                raise
            info = media.probe_video(path)
            raise _too_short(path, d, max(0, int((info.duration - d.start) * d.fps))) from None
        frames, src_times = clip.frames, clip.timestamps
    else:
        clip = media.read_frames(path, fps=d.fps, start=d.start, duration=d.frames / d.fps)
        try:
            idx = media.resample_times(clip.timestamps, d.fps, d.start, d.frames, end=clip.end_time)
        except ValueError:
            have = media.count_target_frames(clip.timestamps, d.fps, d.start, clip.end_time)
            raise _too_short(path, d, have) from None
        frames, src_times = clip.frames[idx], clip.timestamps[idx]
    src_h, src_w = frames.shape[1:3]
    width, height = (d.width, d.height) if d.width else family(cfg.model.type).size_for(src_w, src_h)
    fitted, fit = media.fit_size(frames, width, height, d.resize_mode)
    return fitted, src_times, fit, clip.fps


def load_edit_mask(cfg: Config, times: np.ndarray, fit: FitParams, fps: float, num_frames: int) -> np.ndarray:
    """The user's mask on the job's frames, after morphology. No mask file: everything may change."""
    d = cfg.data
    if not d.mask:
        return np.ones((num_frames, fit.size[1], fit.size[0]), dtype=bool)
    mask = read_mask(d.mask, times, fps=fps, fit=fit, threshold=d.mask_threshold)
    if d.mask_dilate > 0:
        mask = morphology.dilate(mask, d.mask_dilate)
    elif d.mask_dilate < 0:
        mask = morphology.erode(mask, -d.mask_dilate)
    if d.mask_bbox:
        mask = morphology.to_bboxes(mask, d.mask_bbox_enlarge)
    coverage = mask.mean()
    if not mask.any():
        warnings.warn(f"{d.mask}: the mask is empty in every frame: nothing will be edited", stacklevel=2)
    elif mask.all():
        warnings.warn(f"{d.mask}: the mask covers every pixel of every frame: nothing is preserved", stacklevel=2)
    elif coverage > 0.9:
        warnings.warn(f"{d.mask}: the mask covers {coverage:.0%} of the clip", stacklevel=2)
    return mask


def align_frame(path: str | Path, fit: FitParams, what: str = "edited frame") -> np.ndarray:
    """An edited frame onto the job's pixels: as is at the job's size, else through the source's fit."""
    img = media.read_image(path)
    w, h = fit.size
    if img.shape[:2] == (h, w):
        return img
    sw, sh = fit.src_size
    if abs((img.shape[1] / img.shape[0]) / (sw / sh) - 1.0) > 0.01:
        raise MediaError(
            f"{path}: {what} is {img.shape[1]}x{img.shape[0]}, which is neither the job's size {w}x{h} nor the "
            f"source's aspect ratio ({sw}x{sh}); export it at {w}x{h} or at the source's resolution"
        )
    return media.apply_fit(img[None], fit)[0]


_INDEX = re.compile(r"(\d+)$")


def load_reference_frames(folder: str | Path, fit: FitParams, num_frames: int) -> dict[int, np.ndarray]:
    """Edited later frames named by their job frame index (`24.png`, `frame_0024.jpg`)."""
    out: dict[int, np.ndarray] = {}
    for f in media.list_image_files(folder):
        m = _INDEX.search(f.stem)
        if not m:
            raise MediaError(f"{f}: reference frame names must end in the frame index, e.g. 24.png")
        i = int(m.group(1))
        if i == 0:
            raise MediaError(f"{f}: frame 0 is data.edited_frame; to also train on it as a reference sample, set "
                             "training.first_frame_reference = true")
        if not 0 < i < num_frames:
            raise MediaError(f"{f}: frame index {i} is outside the job's frames 1..{num_frames - 1}")
        if i in out:
            raise MediaError(f"{f}: a second reference frame for frame {i}")
        out[i] = align_frame(f, fit, "reference frame")
    return out


def load_job(cfg: Config, edited: bool = True) -> Job:
    """All of a job's media, aligned. `edited`: also read the edited first frame (required then)."""
    if not cfg.data.video:
        raise UserError(f"{cfg.source or 'config'}: data.video is not set")
    frames, times, fit, src_fps = load_source(cfg)
    job = Job(frames, load_edit_mask(cfg, times, fit, src_fps, len(frames)), cfg.data.fps, fit, times)
    if edited:
        if not cfg.data.edited_frame:
            raise UserError(f"{cfg.source or 'config'}: data.edited_frame is not set")
        job.edited_first = align_frame(cfg.data.edited_frame, fit)
        if np.array_equal(job.edited_first, frames[0]):
            warnings.warn(f"{cfg.data.edited_frame}: the edited frame equals the source's first frame", stacklevel=2)
    if cfg.data.reference_frames:
        job.reference = load_reference_frames(cfg.data.reference_frames, fit, len(frames))
    return job


def training_samples(cfg: Config, job: Job) -> dict[str, list[Sample]]:
    """The samples of each training stage: "video" (stage 1) and "reference" (stage 2, may be empty).

    `training.appearance_augment = K` adds K copies of the clip whose edit region is recolored (the same way in
    every frame) to the video samples; `training.first_frame_reference` adds the edited first frame as a
    single-frame reference sample (Sec. 3.3.2 applied to frame 0)."""
    t, d = cfg.training, cfg.data
    prompt = join_prompt(d.trigger, d.caption)

    def clip_samples(frames: np.ndarray, suffix: str = "") -> list[Sample]:
        if is_long(d.frames, d.window):
            out = long_clip_samples(frames, job.edit_mask, prompt, d.window, cfg.inference.window_overlap,
                                    t.random_windows, cfg.seed, t.mode, t.low_cost, t.clip_frames, t.clip_overlap)
        elif t.low_cost:
            out = short_clip_samples(frames, job.edit_mask, prompt, t.clip_frames, t.clip_overlap, t.mode)
        else:
            out = [video_sample(frames, job.edit_mask, prompt, t.mode)]
        for s in out:
            s.name += suffix
        return out

    video = clip_samples(job.frames)
    rng = np.random.default_rng([cfg.seed, 0xA0])
    for k in range(t.appearance_augment):
        video += clip_samples(recolor_region(job.frames, job.edit_mask, rng), f"_aug{k}")
    edited = dict(job.reference)
    if t.first_frame_reference:
        if not d.edited_frame:
            raise UserError(f"{cfg.source or 'config'}: training.first_frame_reference needs data.edited_frame")
        edited[0] = job.edited_first if job.edited_first is not None else align_frame(d.edited_frame, job.fit)
    reference = [reference_sample(job.frames[i], frame, job.edit_mask[i], prompt, i)
                 for i, frame in sorted(edited.items())]
    fill = [with_fill(s, d.condition_fill, cfg.seed) for s in video + reference]
    return {"video": fill[:len(video)], "reference": fill[len(video):]}


def inference_sample_for(cfg: Config, job: Job, preset: str | None = None) -> Sample:
    """The generation sample: the edited first frame in front of the masked source (same mask as training)."""
    if job.edited_first is None:
        raise UserError(f"{cfg.source or 'config'}: data.edited_frame is not set")
    prompt = join_prompt(cfg.data.trigger, cfg.data.edited_caption or cfg.data.caption)
    sample = inference_sample(job.frames, job.edit_mask, job.edited_first, prompt, preset or cfg.inference.mask_preset)
    return with_fill(sample, cfg.data.condition_fill, cfg.seed)
