"""Frames made for looking at: small frames enlarged (nearest, so pixels stay crisp blocks), labelled bands
and labelled side-by-side panels. Used by previews, infer.py's side-by-side and evaluate.py's comparison."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

LABEL_HEIGHT = 18  # pixels of one label band
VIEW_SIDE = 256  # small videos are enlarged until their shorter side reaches at least this


def view_scale(height: int, width: int, side: int = VIEW_SIDE) -> int:
    """The integer factor that brings the shorter side to at least `side` (1 for frames already that large)."""
    return max(1, -(-side // max(1, min(height, width))))


def enlarge(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement of one frame [H, W, C] or a video [T, H, W, C] by an integer factor."""
    if scale == 1:
        return frames
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def label_band(width: int, text: str, height: int = LABEL_HEIGHT) -> np.ndarray:
    """A dark band [height, width, 3] with `text` in white, cut to fit the width."""
    band = np.full((height, width, 3), 32, np.uint8)
    scale = 0.4
    while text and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 4:
        text = text[:-2] + "~" if len(text) > 2 else ""
    cv2.putText(band, text, (2, height - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return band


def labelled_panels(panels: Sequence[tuple[str, np.ndarray]], gap: int = 4) -> np.ndarray:
    """Videos [T, H, W, 3] of one geometry side by side, each enlarged for viewing and with its label on top:
    uint8 [T, LABEL_HEIGHT + H*k, n*W*k + gaps, 3]."""
    t, h, w = panels[0][1].shape[:3]
    k = view_scale(h, w)
    columns = []
    for i, (label, video) in enumerate(panels):
        if video.shape[:3] != (t, h, w):
            raise ValueError(f"panel {label!r} is {video.shape[:3]}, expected {(t, h, w)}")
        big = enlarge(video, k)
        band = np.broadcast_to(label_band(w * k, label), (t, LABEL_HEIGHT, w * k, 3))
        columns.append(np.concatenate([band, big], axis=1))
        if i < len(panels) - 1:
            columns.append(np.full((t, LABEL_HEIGHT + h * k, gap, 3), 255, np.uint8))
    return np.ascontiguousarray(np.concatenate(columns, axis=2))
