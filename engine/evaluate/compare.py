"""What a person judges an edit by: the source, the ground truth (if any) and every result side by side, labelled
and enlarged for viewing, as a video (comparison.mp4) and as one PNG with a row per clip and a column per frame
(comparison.png).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

import media
from config.atomic import atomic_path
from media.viewing import LABEL_HEIGHT, enlarge, label_band, labelled_panels, view_scale

COMPARISON_VIDEO, COMPARISON_STRIP = "comparison.mp4", "comparison.png"
STRIP_MAX_FRAMES = 25  # longer clips: this many evenly spaced frames, their indices in the column labels
STRIP_SIDE = 96  # the shorter side of one frame in the strip (small frames enlarged, large ones shrunk)


def strip_frames(num_frames: int, limit: int = STRIP_MAX_FRAMES) -> list[int]:
    """Every frame index, or `limit` evenly spaced ones (first and last included) for long clips."""
    if num_frames <= limit:
        return list(range(num_frames))
    return sorted({round(i * (num_frames - 1) / (limit - 1)) for i in range(limit)})


def _thumb(frame: np.ndarray, side: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if min(h, w) <= side:  # small: nearest, so every pixel stays a crisp block
        return enlarge(frame, view_scale(h, w, side))
    k = side / min(h, w)
    return cv2.resize(frame, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)


def comparison_strip(rows: list[tuple[str, np.ndarray]], side: int = STRIP_SIDE) -> np.ndarray:
    """uint8 image: a label band and a row of frames per (label, video [T, H, W, 3]); frame numbers on top."""
    picked = strip_frames(len(rows[0][1]))
    gap = 2
    blocks = []
    for label, video in rows:
        thumbs = [_thumb(video[t], side) for t in picked]
        th, tw = thumbs[0].shape[:2]
        line = np.full((th, len(thumbs) * (tw + gap) - gap, 3), 255, np.uint8)
        for i, im in enumerate(thumbs):
            line[:, i * (tw + gap):i * (tw + gap) + tw] = im
        blocks.append(label_band(line.shape[1], label))
        blocks.append(line)
    width = blocks[1].shape[1]
    header = np.full((LABEL_HEIGHT, width, 3), 32, np.uint8)
    for i, t in enumerate(picked):  # frame numbers over their columns
        cell = label_band(tw, f"frame {t}" if tw >= 64 else str(t))
        header[:, i * (tw + gap):i * (tw + gap) + tw] = cell
    return np.concatenate([header, *blocks], axis=0)


def write_comparison(folder: Path, rows: list[tuple[str, np.ndarray]], fps: float) -> dict[str, Path]:
    """comparison.mp4 (the clips side by side, labelled, enlarged) and comparison.png (comparison_strip) in
    `folder`, each written under a temporary name first."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = {"comparison": folder / COMPARISON_VIDEO, "strip": folder / COMPARISON_STRIP}
    media.write_video(files["comparison"], labelled_panels(rows), fps)  # atomic itself
    with atomic_path(files["strip"]) as tmp:
        Image.fromarray(comparison_strip(rows)).save(tmp, format="PNG")
    return files
