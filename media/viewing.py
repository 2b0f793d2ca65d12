"""Frames made for looking at: small frames enlarged (nearest, so pixels stay crisp blocks), labelled bands,
labelled side-by-side panels, a mask overlay in a colour that contrasts with what it covers, and contact sheets
with labelled rows and frames. Used by previews, infer.py's side-by-side and evaluate.py's comparison."""

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


# Overlay colours, far apart; the one farthest from the masked pixels' mean colour is used.
PALETTE = {"red": (255, 40, 40), "green": (40, 230, 60), "blue": (40, 90, 255), "yellow": (255, 230, 0),
           "magenta": (255, 0, 220), "cyan": (0, 230, 255), "white": (255, 255, 255), "black": (0, 0, 0)}


def contrast_colour(frames: np.ndarray, mask: np.ndarray) -> tuple[str, tuple[int, int, int]]:
    """The palette colour farthest (RGB distance) from the mean colour under `mask` (the whole picture if the
    mask is empty): a red object gets a cyan or green overlay, not a red one."""
    region = frames[mask] if mask.any() else frames.reshape(-1, 3)
    mean = region.reshape(-1, 3).astype(np.float64).mean(0)
    name = max(PALETTE, key=lambda k: float(np.sum((np.asarray(PALETTE[k], np.float64) - mean) ** 2)))
    return name, PALETTE[name]


def outlined_overlay(frames: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] | None = None,
                     alpha: float = 0.35) -> np.ndarray:
    """uint8 frames [T, H, W, 3] with the region `mask` (bool [T, H, W]) tinted and its outline drawn at full
    strength, in `colour` (default: `contrast_colour`); the outline shows the border even where the tint is
    faint. Same size as the frames (enlarge before, for small jobs, to get a thinner outline)."""
    if colour is None:
        colour = contrast_colour(frames, mask)[1]
    c = np.asarray(colour, dtype=np.float32)
    out = frames.copy()
    out[mask] = (frames[mask].astype(np.float32) * (1 - alpha) + c * alpha + 0.5).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for i in range(len(out)):
        edge = mask[i] & ~cv2.erode(mask[i].astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
        out[i][edge] = colour
    return out


def sheet_picks(n: int, columns: int) -> np.ndarray:
    """Which of `n` frames a sheet of at most `columns` shows: all of them when they fit, else evenly spaced
    frames including the first and the last."""
    return np.arange(n) if n <= columns else np.unique(np.linspace(0, n - 1, columns).round().astype(int))


def labelled_sheet(rows: Sequence[tuple[str, np.ndarray]], columns: int = 17, thumb_width: int = 160) -> np.ndarray:
    """A contact sheet uint8 [H, W, 3]: one row per labelled video [T, H, W, 3], each frame under a band with its
    index, each row under a band with its label and which frames are shown. Every frame is shown when a video
    has at most `columns`; small frames are enlarged (nearest), large ones reduced to `thumb_width`."""
    n = max(len(v) for _, v in rows)
    picks = sheet_picks(n, columns)
    h, w = rows[0][1].shape[1:3]
    tw = thumb_width
    th = max(1, round(tw * h / w))
    gap = 2
    width = len(picks) * (tw + gap) - gap
    parts = []
    for label, video in rows:
        shown = "all frames" if len(picks) == n else f"frames {', '.join(map(str, picks))} of 0-{n - 1}"
        parts.append(label_band(width, f"{label} ({shown})"))
        line = np.full((LABEL_HEIGHT + th, width, 3), 16, np.uint8)
        for c, i in enumerate(picks):
            x = c * (tw + gap)
            line[:LABEL_HEIGHT, x:x + tw] = label_band(tw, f"frame {i}")
            if i < len(video):
                frame = video[i]
                if tw >= w:  # small: crisp blocks, then the exact size
                    frame = enlarge(frame, max(1, tw // w))
                inter = cv2.INTER_NEAREST if tw >= w else cv2.INTER_AREA
                line[LABEL_HEIGHT:, x:x + tw] = cv2.resize(frame, (tw, th), interpolation=inter)
        parts.append(line)
        parts.append(np.full((gap * 2, width, 3), 255, np.uint8))
    return np.concatenate(parts[:-1], axis=0)
