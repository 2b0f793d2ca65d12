"""Tiny synthetic clips for tests: a gradient background with a square moving right, and its mask."""

from __future__ import annotations

import numpy as np


def moving_square(t: int, w: int, h: int, *, top: int, side: int, x0: int, step: int, margin: int = 0,
                  color: tuple[int, int, int] = (250, 250, 40)) -> tuple[np.ndarray, np.ndarray]:
    """Frames [t, h, w, 3] uint8 and masks [t, h, w] bool: the square at column x0 + step * i in frame i;
    the mask covers the square grown by `margin` pixels on every side."""
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 160)], -1).astype(np.uint8)
    frames = np.repeat(bg[None], t, axis=0)
    masks = np.zeros((t, h, w), bool)
    for i in range(t):
        x = x0 + step * i
        frames[i, top:top + side, x:x + side] = color
        masks[i, max(top - margin, 0):top + side + margin, max(x - margin, 0):x + side + margin] = True
    return frames, masks
