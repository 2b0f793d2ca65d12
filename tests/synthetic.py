"""Tiny synthetic clips for tests: a gradient background with a square moving right, and its mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import media


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


def write_square_job(root: Path, ckpt: Path, *, t: int, w: int, h: int, steps: int, step: int = 3,
                     model_type: str = "wan") -> Path:
    """A job folder for inference tests: the moving square (mask with a 2 px margin) as src.mp4 at 16 fps, a
    mask folder, the first frame with the square's left part painted blue as edited.png, and edit.toml."""
    frames, masks = moving_square(t, w, h, top=10, side=12, x0=6, step=step, margin=2)
    media.write_video(root / "src.mp4", frames, 16)
    (root / "masks").mkdir()
    for i, m in enumerate(masks):
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"{i}.png")
    edited = frames[0].copy()
    edited[10:22, 6:18] = (40, 40, 250)
    Image.fromarray(edited).save(root / "edited.png")
    (root / "edit.toml").write_text(
        f"[model]\ntype = '{model_type}'\nckpt_path = '{ckpt}'\ndtype = 'float32'\n"
        "[data]\nvideo = 'src.mp4'\nmask = 'masks'\nedited_frame = 'edited.png'\ncaption = 'a yellow square'\n"
        f"edited_caption = 'a blue square'\nfps = 16.0\nframes = {t}\nwidth = {w}\nheight = {h}\n"
        f"[inference]\nsteps = {steps}\n"
    )
    return root


def write_training_job(root: Path, ckpt: Path, *, steps: int | None, lr: float | None = None,
                       sample_steps: int = 2) -> Path:
    """write_square_job (5 frames at 32x32) plus a small LoRA training setup: rank 4, stage 1 only, no
    intermediate LoRA files or timed checkpoints; `steps` training steps (None: the default)."""
    write_square_job(root, ckpt, t=5, w=32, h=32, steps=sample_steps)
    training = "" if steps is None else f"steps = {steps}\n"
    optimizer = "" if lr is None else f"[optimizer]\nlr = {lr}\n"
    with open(root / "edit.toml", "a") as fh:
        fh.write(f"[adapter]\nrank = 4\n[training]\n{training}reference_steps = 0\nsave_every_n_steps = 0\n"
                 f"checkpoint_every_n_minutes = 0\n{optimizer}")
    return root
