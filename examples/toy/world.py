"""A synthetic video world with exact ground truth for edits.

Each clip is rendered deterministically from a `ClipParams`: one or two shapes (disc, square, ring) of
named colors moving, scaling or spinning over a smooth two-color gradient with a mild texture. Because a
clip is a pure function of its parameters, an *edited* clip is exact: change one shape's color and render
again. The edited shape's per-frame silhouette is exact too, which gives the edit mask.

Pixels are anti-aliased by 4x4 supersampling; a shape's mask is every pixel it covers at all, so an edit
of that shape can only change pixels inside its mask.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

FRAMES = 9  # 4k+1, as the Wan VAE needs
SIZE = 32  # pixels, square
SUPERSAMPLE = 4
TRAIN_SEEDS = range(0, 1_000_000)  # pretraining draws from here
HELDOUT_SEED0 = 1_000_000  # held-out clips (the ablation) start here: never seen in pretraining

# Saturated shape colors and muted background colors, by the names the captions use.
SHAPE_COLORS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.25, 0.95),
                "yellow": (0.95, 0.9, 0.1), "cyan": (0.1, 0.85, 0.9), "magenta": (0.9, 0.15, 0.85),
                "orange": (1.0, 0.55, 0.05), "white": (0.97, 0.97, 0.97), "black": (0.05, 0.05, 0.05)}
BG_COLORS = {"blue": (0.25, 0.35, 0.6), "green": (0.3, 0.55, 0.3), "teal": (0.2, 0.5, 0.5),
             "brown": (0.5, 0.35, 0.2), "pink": (0.75, 0.5, 0.6), "gray": (0.5, 0.5, 0.5),
             "purple": (0.45, 0.3, 0.6), "sand": (0.75, 0.7, 0.5)}
KINDS = ("disc", "square", "ring")
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


@dataclass(frozen=True)
class Shape:
    kind: str  # one of KINDS
    color: str  # a SHAPE_COLORS name
    x: float  # center at frame 0, pixels
    y: float
    direction: str  # a DIRECTIONS name
    speed: float  # pixels per frame
    size: float  # radius (disc, ring) or half side (square) at frame 0, pixels
    growth: float  # size change per frame, pixels (0: constant)
    spin: float  # radians per frame (only visible on squares)
    angle: float = 0.0  # at frame 0


@dataclass(frozen=True)
class ClipParams:
    seed: int
    shapes: tuple[Shape, ...]
    bg_from: str  # BG_COLORS names of the gradient's two ends
    bg_to: str
    bg_angle: float  # gradient direction, radians
    texture_freq: float  # stripes per frame width of the mild texture
    texture_angle: float
    frames: int = FRAMES
    size: int = SIZE


def _motion_words(s: Shape) -> str:
    words = [f"moves {s.direction}"]
    if s.growth > 0:
        words.append("grows")
    elif s.growth < 0:
        words.append("shrinks")
    if s.spin and s.kind == "square":
        words.append("spins")
    return " and ".join(words) if len(words) < 3 else f"{words[0]}, {words[1]} and {words[2]}"


def caption(p: ClipParams) -> str:
    """"a red disc moves left over a blue-green gradient" (one clause per shape)."""
    clauses = [f"{'an' if s.color[0] in 'aeiou' else 'a'} {s.color} {s.kind} {_motion_words(s)}" for s in p.shapes]
    return f"{' while '.join(clauses)} over a {p.bg_from}-{p.bg_to} gradient"


def sample_params(seed: int, frames: int = FRAMES, size: int = SIZE) -> ClipParams:
    """The clip of `seed`: every random choice comes from this seed alone."""
    rng = np.random.default_rng(seed)
    n_shapes = 1 if rng.random() < 0.6 else 2
    colors = rng.choice(list(SHAPE_COLORS), size=n_shapes, replace=False)
    shapes = []
    for i in range(n_shapes):
        kind = str(rng.choice(KINDS))
        r = float(rng.uniform(0.16, 0.24) * size)
        growth = float(rng.choice([0.0, 0.0, 1.0, -1.0]) * rng.uniform(0.01, 0.02) * size)
        spin = float(rng.uniform(0.1, 0.25) * rng.choice([-1, 1])) if kind == "square" and rng.random() < 0.5 else 0.0
        direction = str(rng.choice(list(DIRECTIONS)))
        speed = float(rng.uniform(0.03, 0.06) * size)
        dx, dy = DIRECTIONS[direction]
        travel = speed * (frames - 1)
        # Start where the whole path stays inside the frame (with the largest size along it).
        rmax = r + max(0.0, growth) * (frames - 1)
        lo_x, hi_x = rmax - min(0.0, dx) * travel, size - rmax - max(0.0, dx) * travel
        lo_y, hi_y = rmax - min(0.0, dy) * travel, size - rmax - max(0.0, dy) * travel
        x = float(rng.uniform(lo_x, max(lo_x, hi_x)))
        y = float(rng.uniform(lo_y, max(lo_y, hi_y)))
        shapes.append(Shape(kind, str(colors[i]), x, y, direction, speed, r, growth, spin,
                            float(rng.uniform(0, math.pi / 2))))
    bg = rng.choice(list(BG_COLORS), size=2, replace=False)
    return ClipParams(seed, tuple(shapes), str(bg[0]), str(bg[1]), float(rng.uniform(0, 2 * math.pi)),
                      float(rng.uniform(2.0, 5.0)), float(rng.uniform(0, math.pi)), frames, size)


def _grid(size: int, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-center coordinates of the supersampled grid, in output pixels."""
    c = (np.arange(size * ss, dtype=np.float64) + 0.5) / ss
    return np.meshgrid(c, c)  # (x, y), each [size*ss, size*ss]


def background(p: ClipParams) -> np.ndarray:
    """float [H, W, 3] in [0, 1]: a two-color gradient with mild diagonal stripes (static over time)."""
    x, y = _grid(p.size, 1)
    u = ((x - p.size / 2) * math.cos(p.bg_angle) + (y - p.size / 2) * math.sin(p.bg_angle)) / p.size + 0.5
    u = np.clip(u, 0, 1)[..., None]
    a, b = np.array(BG_COLORS[p.bg_from]), np.array(BG_COLORS[p.bg_to])
    img = (1 - u) * a + u * b
    v = x * math.cos(p.texture_angle) + y * math.sin(p.texture_angle)
    img = img + 0.05 * np.sin(2 * math.pi * p.texture_freq * v / p.size)[..., None]
    return np.clip(img, 0, 1)


def shape_state(s: Shape, t: int) -> tuple[float, float, float, float]:
    """(x, y, size, angle) of a shape at frame t."""
    dx, dy = DIRECTIONS[s.direction]
    return s.x + dx * s.speed * t, s.y + dy * s.speed * t, max(1.0, s.size + s.growth * t), s.angle + s.spin * t


def coverage(s: Shape, t: int, size: int, ss: int = SUPERSAMPLE) -> np.ndarray:
    """float [H, W] in [0, 1]: the fraction of each pixel the shape covers at frame t."""
    x, y = _grid(size, ss)
    cx, cy, r, ang = shape_state(s, t)
    if s.kind == "square":
        u = (x - cx) * math.cos(ang) + (y - cy) * math.sin(ang)
        v = -(x - cx) * math.sin(ang) + (y - cy) * math.cos(ang)
        inside = (np.abs(u) <= r) & (np.abs(v) <= r)
    else:
        d = np.hypot(x - cx, y - cy)
        inside = d <= r if s.kind == "disc" else (d <= r) & (d >= 0.55 * r)
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))


def render(p: ClipParams) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 [T, H, W, 3], shape masks bool [S, T, H, W]); later shapes are drawn on top."""
    bg = background(p)
    frames = np.empty((p.frames, p.size, p.size, 3), dtype=np.uint8)
    masks = np.zeros((len(p.shapes), p.frames, p.size, p.size), dtype=bool)
    for t in range(p.frames):
        img = bg.copy()
        for i, s in enumerate(p.shapes):
            cov = coverage(s, t, p.size)[..., None]
            img = (1 - cov) * img + cov * np.array(SHAPE_COLORS[s.color])
            masks[i, t] = cov[..., 0] > 0
        frames[t] = np.round(img * 255).astype(np.uint8)
    return frames, masks


def recolor(p: ClipParams, shape_index: int, color: str) -> ClipParams:
    """The same clip with one shape's color changed (the ground truth of a recolor edit)."""
    if color not in SHAPE_COLORS:
        raise ValueError(f"unknown color {color!r}; one of {sorted(SHAPE_COLORS)}")
    shapes = list(p.shapes)
    shapes[shape_index] = dataclasses.replace(shapes[shape_index], color=color)
    return dataclasses.replace(p, shapes=tuple(shapes))


def edit_color_for(p: ClipParams, shape_index: int = 0) -> str:
    """A deterministic new color for a shape: the palette color farthest from its current one and from the
    other shapes' colors (so the edit is unambiguous)."""
    taken = [np.array(SHAPE_COLORS[s.color]) for s in p.shapes]
    own = np.array(SHAPE_COLORS[p.shapes[shape_index].color])

    def score(name: str) -> float:
        c = np.array(SHAPE_COLORS[name])
        return float(np.linalg.norm(c - own)) + 0.5 * min(float(np.linalg.norm(c - t)) for t in taken)

    return max((n for n in SHAPE_COLORS if n not in {s.color for s in p.shapes}), key=score)


@dataclass
class EditCase:
    """One held-out edit: the source clip, the ground-truth edited clip and the edited shape's masks."""

    params: ClipParams
    edited_params: ClipParams
    source: np.ndarray  # uint8 [T, H, W, 3]
    edited: np.ndarray  # uint8 [T, H, W, 3]
    mask: np.ndarray  # bool [T, H, W]: the edited shape's silhouette

    @property
    def caption(self) -> str:
        return caption(self.params)

    @property
    def edited_caption(self) -> str:
        return caption(self.edited_params)


def edit_case(seed: int, frames: int = FRAMES, size: int = SIZE) -> EditCase:
    """Recolor shape 0 of clip `seed`; shape 0 is the bottom one, so a second shape may occlude it."""
    p = sample_params(seed, frames, size)
    q = recolor(p, 0, edit_color_for(p, 0))
    src, masks = render(p)
    dst, _ = render(q)
    return EditCase(p, q, src, dst, masks[0])


def heldout_seeds(n: int) -> list[int]:
    return [HELDOUT_SEED0 + i for i in range(n)]
