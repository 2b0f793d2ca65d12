"""Render the example clip: a red ball rolling across a small park scene, with its exact mask.

Writes (next to this file) clip.mp4, mask.mp4 (white = the ball), edited_first.png (the ball recolored
blue on frame 0) and reference/<source frame>.png (the same recolor on a later frame). Deterministic:
re-running writes the same pictures. `python examples/make_example.py`
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from media import write_video  # noqa: E402

W, H, FPS, SECONDS = 416, 240, 24, 3.5
REFERENCE_FRAME = 18  # 0.75 s into the clip: inside a 17-frame (1 s) window too
RED, BLUE = (205, 40, 35), (40, 90, 215)


def background() -> np.ndarray:
    """Sky gradient, hills, grass with noise texture, a path and a few trees."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.zeros((H, W, 3), np.float32)
    sky = yy < 110
    img[sky] = np.stack([120 + 0.5 * yy, 170 + 0.4 * yy, 235 + 0 * yy], -1)[sky]
    img[(yy >= 110) & (yy < 130)] = (110, 160, 100)  # far meadow behind the hills
    hills = (yy >= 110 - 18 * np.sin(xx / 60.0) - 10) & ~(yy >= 130)
    img[hills] = (90, 140, 90)
    grass = yy >= 130
    img[grass] = (70, 150, 60)
    img += rng.normal(0, 6, img.shape) * (yy >= 100)[..., None]
    path = (np.abs(yy - (185 + 6 * np.sin(xx / 50.0))) < 14)
    img[path] = (185, 165, 125) + rng.normal(0, 5, (int(path.sum()), 3))
    for tx in (40, 150, 300, 380):
        trunk = (np.abs(xx - tx) < 4) & (yy > 95) & (yy < 140)
        img[trunk] = (95, 65, 40)
        crown = (xx - tx) ** 2 + (yy - 88) ** 2 < 22**2
        img[crown] = (40, 110, 45) + rng.normal(0, 8, (int(crown.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def ball(t: float) -> tuple[float, float, float]:
    """Center x, y and radius: rolling right along the path with a small bounce."""
    x = 30 + 330 * t / SECONDS
    y = 170 + 6 * np.sin(x / 50.0) - 10 * abs(np.sin(3.0 * t))
    return x, y, 17.0


def render(t: float, bg: np.ndarray, color: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    x, y, r = ball(t)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    frame = bg.astype(np.float32).copy()
    shadow = ((xx - x) / (1.2 * r)) ** 2 + ((yy - (y + r + 3)) / (0.35 * r)) ** 2 < 1
    frame[shadow] *= 0.6
    d2 = (xx - x) ** 2 + (yy - y) ** 2
    inside = d2 < r * r
    # simple shading: lighter towards the upper left, a rotating stripe shows the roll
    shade = 1.15 - 0.5 * np.sqrt((xx - x + 6) ** 2 + (yy - y + 6) ** 2) / r
    angle = np.arctan2(yy - y, xx - x) + x / r
    stripe = np.abs(np.sin(angle * 1.5)) < 0.25
    base = np.array(color, np.float32)
    col = base[None, None] * np.clip(shade, 0.45, 1.2)[..., None]
    col = np.where(stripe[..., None], col * 0.55 + 110, col)
    frame[inside] = col[inside]
    return np.clip(frame, 0, 255).astype(np.uint8), inside


def main() -> None:
    bg = background()
    n = int(SECONDS * FPS)
    frames, masks = zip(*(render(i / FPS, bg, RED) for i in range(n)))
    write_video(HERE / "clip.mp4", np.stack(frames), FPS, crf=23)
    mask_rgb = np.repeat((np.stack(masks) * 255).astype(np.uint8)[..., None], 3, -1)
    write_video(HERE / "mask.mp4", mask_rgb, FPS, crf=18)
    Image.fromarray(render(0.0, bg, BLUE)[0]).save(HERE / "edited_first.png")
    (HERE / "reference").mkdir(exist_ok=True)
    Image.fromarray(render(REFERENCE_FRAME / FPS, bg, BLUE)[0]).save(HERE / "reference" / f"{REFERENCE_FRAME}.png")


if __name__ == "__main__":
    main()
