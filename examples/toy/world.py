"""A synthetic video world with exact ground truth for edits.

Each clip is rendered deterministically from a `ClipParams`: one or two shapes (disc, square, ring) of named
colors, solid or striped, some carrying a small badge (a dot or block riding on them), moving, scaling or
spinning over a smooth two-color gradient with a mild texture. Because a clip is a pure function of its
parameters, an *edited* clip is exact: change one shape's parameters and render again. Five edit kinds
(`EDIT_KINDS`): recolor, shape swap (disc -> square ...), pattern (solid <-> striped), size, and an added
object (a badge that moves with the shape). The edit mask of a frame is every pixel the edited shape
covers, before or after the edit, so an edit can only change pixels inside its mask.

Frames are rendered on a 4x4 supersampled grid and averaged (anti-aliasing); a shape "covers" a pixel when
any of its subpixels is inside.
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
EDIT_KINDS = ("recolor", "shape", "pattern", "size", "add_object")
SIZE_RANGE = (0.12, 0.30)  # shape radius / half side, as a fraction of the frame
# Motions come in a few rates the captions name ("moves slowly left", "spins clockwise"), with a little jitter,
# so a caption and a first frame nearly determine the clip.
SPEEDS = (0.035, 0.06)  # pixels per frame, as a fraction of the frame: slowly, quickly
FAST = sum(SPEEDS) / 2
GROWTH = 0.015  # size change per frame, fraction of the frame
SPIN = 0.18  # radians per frame; positive turns clockwise on screen (y points down)
STRIPE_PERIOD = 0.5  # stripe width, in units of the shape's size (a disc of radius r shows four stripes)


@dataclass(frozen=True)
class Badge:
    """A small dot (disc) or block (square) riding on a shape: offset and size in units of the shape's size,
    in the shape's own frame (it turns with a spinning square)."""

    kind: str  # "disc" or "square"
    color: str
    dx: float
    dy: float
    size: float


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
    pattern: str = "solid"  # or "striped": stripes of `color` and `color2` across the shape
    color2: str = "white"
    badge: Badge | None = None


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
    # Long clips (`long_params`): per shape, the (x_lo, x_hi, y_lo, y_hi) its center bounces between; empty: the
    # plain straight path of the 9-frame world.
    bounce: tuple[tuple[float, float, float, float], ...] = ()


# ------------------------------------------------------------------------------------------ captions


def _size_word(s: Shape, frame: int) -> str:
    r = s.size / frame
    return "small " if r < 0.17 else "big " if r > 0.24 else ""


def _motion_words(s: Shape, frame: int) -> str:
    words = [f"moves {'quickly' if s.speed > FAST * frame else 'slowly'} {s.direction}"]
    if s.growth > 0:
        words.append("grows")
    elif s.growth < 0:
        words.append("shrinks")
    if s.spin and s.kind == "square":
        words.append(f"spins {'clockwise' if s.spin > 0 else 'counterclockwise'}")
    return " and ".join(words) if len(words) < 3 else f"{words[0]}, {words[1]} and {words[2]}"


def describe(s: Shape, frame: int = SIZE) -> str:
    """"a big red and white striped disc with a small yellow dot" (the noun phrase of one shape)."""
    look = s.color if s.pattern == "solid" else f"{s.color} and {s.color2} striped"
    text = f"{_size_word(s, frame)}{look} {s.kind}"
    text = f"{'an' if text[0] in 'aeiou' else 'a'} {text}"
    if s.badge is not None:
        text += f" with a small {s.badge.color} {'dot' if s.badge.kind == 'disc' else 'block'}"
    return text


def caption(p: ClipParams) -> str:
    """"a red disc moves left over a blue-green gradient" (one clause per shape)."""
    clauses = [f"{describe(s, p.size)} {_motion_words(s, p.size)}" for s in p.shapes]
    return f"{' while '.join(clauses)} over a {p.bg_from}-{p.bg_to} gradient"


# ------------------------------------------------------------------------------------------ sampling


def _farthest_color(own: str, avoid: set[str], others: list[str]) -> str:
    """The palette color farthest from `own` (and, half as much, from `others`), never one of `avoid`."""
    taken = [np.array(SHAPE_COLORS[c]) for c in others] or [np.array(SHAPE_COLORS[own])]
    base = np.array(SHAPE_COLORS[own])

    def score(name: str) -> float:
        c = np.array(SHAPE_COLORS[name])
        return float(np.linalg.norm(c - base)) + 0.5 * min(float(np.linalg.norm(c - t)) for t in taken)

    return max((n for n in SHAPE_COLORS if n not in avoid), key=score)


def _badge(rng: np.random.Generator, avoid: set[str]) -> Badge:
    phi = float(rng.uniform(0, 2 * math.pi))
    dist = float(rng.uniform(0.45, 0.7))
    color = str(rng.choice([c for c in SHAPE_COLORS if c not in avoid]))
    return Badge(str(rng.choice(["disc", "square"])), color, dist * math.cos(phi), dist * math.sin(phi),
                 float(rng.uniform(0.35, 0.45)))


def sample_params(seed: int, frames: int = FRAMES, size: int = SIZE) -> ClipParams:
    """The clip of `seed`: every random choice comes from this seed alone."""
    rng = np.random.default_rng(seed)
    n_shapes = 1 if rng.random() < 0.6 else 2
    colors = [str(c) for c in rng.choice(list(SHAPE_COLORS), size=n_shapes, replace=False)]
    shapes = []
    for i in range(n_shapes):
        kind = str(rng.choice(KINDS))
        r = float(rng.uniform(*SIZE_RANGE) * size)
        growth = float(rng.choice([0.0, 0.0, 1.0, -1.0]) * GROWTH * rng.uniform(0.9, 1.1) * size)
        spins = kind == "square" and rng.random() < 0.5
        spin = float(SPIN * rng.uniform(0.9, 1.1) * rng.choice([-1, 1])) if spins else 0.0
        direction = str(rng.choice(list(DIRECTIONS)))
        speed = float(rng.choice(SPEEDS) * rng.uniform(0.95, 1.05) * size)
        dx, dy = DIRECTIONS[direction]
        travel = speed * (frames - 1)
        # Start where most of the path stays inside the frame (with the largest size along it).
        rmax = min(r + max(0.0, growth) * (frames - 1), 0.3 * size)
        lo_x, hi_x = rmax - min(0.0, dx) * travel, size - rmax - max(0.0, dx) * travel
        lo_y, hi_y = rmax - min(0.0, dy) * travel, size - rmax - max(0.0, dy) * travel
        x = float(rng.uniform(lo_x, max(lo_x, hi_x)))
        y = float(rng.uniform(lo_y, max(lo_y, hi_y)))
        angle = float(rng.uniform(0, math.pi / 2))
        striped = rng.random() < 0.3
        color2 = _farthest_color(colors[i], set(colors), []) if striped else "white"
        badge = _badge(rng, {colors[i], color2}) if rng.random() < 0.25 else None
        shapes.append(Shape(kind, colors[i], x, y, direction, speed, r, growth, spin, angle,
                            "striped" if striped else "solid", color2, badge))
    bg = rng.choice(list(BG_COLORS), size=2, replace=False)
    return ClipParams(seed, tuple(shapes), str(bg[0]), str(bg[1]), float(rng.uniform(0, 2 * math.pi)),
                      float(rng.uniform(2.0, 5.0)), float(rng.uniform(0, math.pi)), frames, size)


# ------------------------------------------------------------------------------------------ rendering


def _grid(size: int, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-center coordinates of the supersampled grid, in output pixels."""
    c = (np.arange(size * ss, dtype=np.float64) + 0.5) / ss
    return np.meshgrid(c, c)  # (x, y), each [size*ss, size*ss]


def background(p: ClipParams, ss: int = 1) -> np.ndarray:
    """float [H*ss, W*ss, 3] in [0, 1]: a two-color gradient with mild diagonal stripes (static over time)."""
    x, y = _grid(p.size, ss)
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


def _triangle(t: float, half: float) -> float:
    """0 at t = 0, rising to `half` at t = half, back to 0 at 2 * half, and so on."""
    return half - abs(t % (2 * half) - half)


def _reflect(v: float, lo: float, hi: float) -> float:
    """`v` folded into [lo, hi] as a ball bouncing between two walls."""
    if hi - lo < 1e-6:
        return lo
    return lo + _triangle(v - lo, hi - lo)


def _bounced(s: Shape, t: int, box: tuple[float, float, float, float]) -> Shape:
    """The shape of a long clip at frame t, as a still shape (its state at its own frame 0): the center bounces
    inside `box` and the size grows or shrinks for FRAMES - 1 frames, then turns back."""
    dx, dy = DIRECTIONS[s.direction]
    x = _reflect(s.x + dx * s.speed * t, box[0], box[1])
    y = _reflect(s.y + dy * s.speed * t, box[2], box[3])
    size = s.size + s.growth * _triangle(t, FRAMES - 1)
    return dataclasses.replace(s, x=x, y=y, size=size, angle=s.angle + s.spin * t, speed=0.0, growth=0.0, spin=0.0)


def long_params(seed: int, frames: int, size: int = SIZE) -> ClipParams:
    """Clip `seed` of the 9-frame world, `frames` long: each shape bounces inside the box its 9-frame path was
    placed in (so it stays in the frame) and its growth turns back every 8 frames."""
    p = sample_params(seed, FRAMES, size)
    boxes = []
    for s in p.shapes:
        reach = min(max(s.size, s.size + s.growth * (FRAMES - 1)), 0.3 * size)
        boxes.append((min(reach, s.x), max(size - reach, s.x), min(reach, s.y), max(size - reach, s.y)))
    return dataclasses.replace(p, frames=frames, bounce=tuple(boxes))


def _inside(kind: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Subpixels inside a shape of `kind` and size r, in its own (rotated) coordinates u, v."""
    if kind == "square":
        return (np.abs(u) <= r) & (np.abs(v) <= r)
    d = np.hypot(u, v)
    return d <= r if kind == "disc" else (d <= r) & (d >= 0.55 * r)


def _paint(s: Shape, t: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(covered bool [N, N], color float [N, N, 3]) of a shape and its badge at frame t on a subpixel grid."""
    cx, cy, r, ang = shape_state(s, t)
    cos, sin = math.cos(ang), math.sin(ang)
    u, v = (x - cx) * cos + (y - cy) * sin, -(x - cx) * sin + (y - cy) * cos
    body = _inside(s.kind, u, v, r)
    color = np.broadcast_to(np.array(SHAPE_COLORS[s.color]), x.shape + (3,)).copy()
    if s.pattern == "striped":
        odd = np.floor(u / (STRIPE_PERIOD * r)).astype(int) % 2 == 1
        color[odd] = SHAPE_COLORS[s.color2]
    covered = body
    if s.badge is not None:
        b = s.badge
        badge = _inside(b.kind, u - b.dx * r, v - b.dy * r, b.size * r)
        color[badge] = SHAPE_COLORS[b.color]
        covered = body | badge
    return covered, color


def render(p: ClipParams) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 [T, H, W, 3], shape masks bool [S, T, H, W]); later shapes are drawn on top."""
    ss, n = SUPERSAMPLE, p.size
    x, y = _grid(n, ss)
    bg = background(p, ss)
    frames = np.empty((p.frames, n, n, 3), dtype=np.uint8)
    masks = np.zeros((len(p.shapes), p.frames, n, n), dtype=bool)
    for t in range(p.frames):
        img = bg.copy()
        for i, s in enumerate(p.shapes):
            tt = t
            if p.bounce:
                s, tt = _bounced(s, t, p.bounce[i]), 0
            win = _window(s, tt, n)  # painting only the shape's bounding box is ~10x faster than the frame
            covered, color = _paint(s, tt, x[win], y[win])
            img[win][covered] = color[covered]
            full = np.zeros((n * ss, n * ss), dtype=bool)
            full[win] = covered
            masks[i, t] = full.reshape(n, ss, n, ss).any(axis=(1, 3))
        frames[t] = np.round(img.reshape(n, ss, n, ss, 3).mean(axis=(1, 3)) * 255).astype(np.uint8)
    return frames, masks


def _window(s: Shape, t: int, n: int) -> tuple[slice, slice]:
    """The subpixel rows and columns of a square around the shape and its badge at frame t, clipped to the frame."""
    cx, cy, r, _ = shape_state(s, t)
    reach = r * math.sqrt(2) * (1.0 + (math.hypot(s.badge.dx, s.badge.dy) + s.badge.size if s.badge else 0.0)) + 1

    def span(c: float) -> slice:
        return slice(int(np.clip(math.floor(c - reach), 0, n)) * SUPERSAMPLE,
                     int(np.clip(math.ceil(c + reach), 0, n)) * SUPERSAMPLE)

    return span(cy), span(cx)


# ------------------------------------------------------------------------------------------ edits


def recolor(p: ClipParams, shape_index: int, color: str) -> ClipParams:
    """The same clip with one shape's color changed (the ground truth of a recolor edit)."""
    if color not in SHAPE_COLORS:
        raise ValueError(f"unknown color {color!r}; one of {sorted(SHAPE_COLORS)}")
    return _replace_shape(p, shape_index, color=color)


def _replace_shape(p: ClipParams, i: int, **changes) -> ClipParams:
    shapes = list(p.shapes)
    shapes[i] = dataclasses.replace(shapes[i], **changes)
    return dataclasses.replace(p, shapes=tuple(shapes))


def edit_color_for(p: ClipParams, shape_index: int = 0) -> str:
    """A deterministic new color for a shape: the palette color farthest from its current one and from the
    other shapes' colors (so the edit is unambiguous)."""
    s = p.shapes[shape_index]
    used = {c.color for c in p.shapes} | {s.color2 if s.pattern == "striped" else s.color}
    return _farthest_color(s.color, used, [c.color for c in p.shapes])


def edit_params(p: ClipParams, kind: str) -> tuple[ClipParams, ClipParams]:
    """(source, edited) parameters of an edit of `kind` on shape 0 of clip `p`. The source may differ from `p`
    where the edit needs a starting point (a solid shape to stripe, a shape without a badge to add one to)."""
    s = p.shapes[0]
    if kind == "recolor":
        return p, recolor(p, 0, edit_color_for(p, 0))
    if kind == "shape":
        return p, _replace_shape(p, 0, kind={"disc": "square", "square": "disc", "ring": "square"}[s.kind])
    if kind == "pattern":
        src = _replace_shape(p, 0, pattern="solid", color2="white")
        second = _farthest_color(s.color, {c.color for c in p.shapes}, [c.color for c in p.shapes])
        return src, _replace_shape(src, 0, pattern="striped", color2=second)
    if kind == "size":
        factor = 1.5 if s.size < 0.2 * p.size else 0.6
        return p, _replace_shape(p, 0, size=s.size * factor, growth=s.growth * factor)
    if kind == "add_object":
        src = _replace_shape(p, 0, badge=None)
        rng = np.random.default_rng([p.seed, 7])
        avoid = {c.color for c in p.shapes} | {s.color2}
        return src, _replace_shape(src, 0, badge=_badge(rng, avoid))
    raise ValueError(f"unknown edit kind {kind!r}; one of {', '.join(EDIT_KINDS)}")


@dataclass
class EditCase:
    """One held-out edit: the source clip, the ground-truth edited clip and the edited shape's masks."""

    params: ClipParams
    edited_params: ClipParams
    source: np.ndarray  # uint8 [T, H, W, 3]
    edited: np.ndarray  # uint8 [T, H, W, 3]
    mask: np.ndarray  # bool [T, H, W]: every pixel the edited shape covers, before or after the edit
    kind: str = "recolor"

    @property
    def caption(self) -> str:
        return caption(self.params)

    @property
    def edited_caption(self) -> str:
        return caption(self.edited_params)


def edit_case(seed: int, kind: str = "recolor", frames: int = FRAMES, size: int = SIZE) -> EditCase:
    """An edit of `kind` on shape 0 of clip `seed`; shape 0 is the bottom one, so a second shape may occlude it."""
    p, q = edit_params(sample_params(seed, frames, size), kind)
    src, masks = render(p)
    dst, edited_masks = render(q)
    return EditCase(p, q, src, dst, masks[0] | edited_masks[0], kind)


def long_edit_case(seed: int, kind: str = "recolor", frames: int = 33, size: int = SIZE) -> EditCase:
    """`edit_case` on the long version of clip `seed` (`long_params`): the edit keeps the source's bounce box, so
    the edited shape follows the source's path exactly."""
    p, q = edit_params(long_params(seed, frames, size), kind)
    src, masks = render(p)
    dst, edited_masks = render(q)
    return EditCase(p, q, src, dst, masks[0] | edited_masks[0], kind)


def heldout_seeds(n: int, start: int = 0) -> list[int]:
    return [HELDOUT_SEED0 + start + i for i in range(n)]
