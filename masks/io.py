"""Mask files -> boolean edit masks aligned with the resampled, resized video.

User convention (files): WHITE = region that may change (generate), BLACK = keep.
Returned arrays: bool ``[T, H, W]``, True = EDIT region (still user semantics). ``to_keep_mask``
converts once to the paper's convention (1 = preserve, 0 = generate) for everything downstream.

Binarization: a pixel is EDIT when its value is strictly greater than ``threshold`` x full scale
(default 0.5: 8-bit > 127.5, 16-bit > 32767.5), so threshold 0 means "any non-black pixel".
Colour masks use Rec.601 luminance; an alpha channel multiplies it (composite onto black), so a
white-on-transparent layer and a plain white-on-black image both work. Mask videos are decoded as
luma (full range, 0..255).

Alignment: a mask *video* is sampled at the source times of the picked video frames (the
``timestamps`` of ``media.read_video_at`` / ``clip.timestamps[indices]``), so it follows the video
even at another frame rate; a mask *image folder* pairs its k-th file with source frame k (time
k / source fps); a single mask image is repeated for every frame. The geometry is the video's
``FitParams`` with nearest interpolation (centre-aligned), padding with 0 = keep.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from media import (
    IMAGE_EXTS,
    FitParams,
    MediaError,
    apply_fit,
    list_image_files,
    pick_frames,
    read_image_luma,
    read_video_at,
)

DEFAULT_THRESHOLD = 0.5


def binarize(values: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """True where value > threshold x full scale (255 for uint8, 65535 for uint16, 1.0 for floats)."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"mask threshold must be in [0, 1), got {threshold}")
    values = np.asarray(values)
    if values.dtype == np.uint8:
        full = 255.0
    elif values.dtype == np.uint16:
        full = 65535.0
    elif np.issubdtype(values.dtype, np.floating):
        full = 1.0
    elif values.dtype == np.bool_:
        return values.copy()
    else:
        raise ValueError(f"unsupported mask dtype {values.dtype}")
    return values > threshold * full


def _fit_mask(mask: np.ndarray, fit: FitParams, path: Path) -> np.ndarray:
    try:
        out = apply_fit(mask.view(np.uint8), fit, interpolation=cv2.INTER_NEAREST_EXACT, pad_value=0)
    except ValueError as e:
        raise MediaError(f"{path}: mask does not match the video ({e})") from e
    return out.view(np.bool_)


def _read_folder(folder: Path, times: np.ndarray, fps: float | None, threshold: float) -> np.ndarray:
    if not fps or fps <= 0:
        raise ValueError(f"{folder}: a mask image folder needs the source fps")
    files = list_image_files(folder)
    ts = np.arange(len(files)) / fps
    try:
        idx = pick_frames(ts, times, end=len(files) / fps)
    except ValueError as e:
        raise MediaError(f"{folder}: mask sequence too short: {len(files)} images at {fps:g} fps ({e})") from e
    cache: dict[int, np.ndarray] = {}  # the same file is often picked twice when fps drops
    for i in np.unique(idx):
        cache[int(i)] = binarize(read_image_luma(files[i]), threshold)
    shape = cache[int(idx[0])].shape
    for i, m in cache.items():
        if m.shape != shape:
            raise MediaError(f"{files[i]}: mask size {m.shape[1]}x{m.shape[0]} differs from {shape[1]}x{shape[0]}")
    return np.stack([cache[int(i)] for i in idx])


def read_mask(
    path: str | os.PathLike,
    times: np.ndarray,
    fps: float | None = None,
    fit: FitParams | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> np.ndarray:
    """Read a mask video, image folder or single image as bool [len(times), H, W], True = EDIT.

    times: source times of the video frames used (``clip.timestamps`` from read_video_at, or
    ``clip.timestamps[indices]``); fps: the source video's fps (needed for image folders);
    fit: the video's FitParams (None keeps the mask's own resolution)."""
    path = Path(path)
    times = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if path.is_dir():
        mask = _read_folder(path, times, fps, threshold)
    elif path.suffix.lower() in IMAGE_EXTS:
        one = binarize(read_image_luma(path), threshold)
        mask = np.repeat(one[None], times.size, axis=0)
    else:
        clip = read_video_at(path, times, pixel_format="gray")
        mask = binarize(clip.frames, threshold)
    if fit is not None:
        mask = _fit_mask(mask, fit, path)
    return mask


def to_keep_mask(edit_mask: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """User EDIT mask (True/white = may change) -> paper's m_condition: float 1 = preserve, 0 = generate."""
    if isinstance(edit_mask, torch.Tensor):
        return (~edit_mask.bool()).float()
    return (~np.asarray(edit_mask, dtype=bool)).astype(np.float32)
