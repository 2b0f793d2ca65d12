"""`--auto-mask`: the edit region from the edited first frame, carried through the clip by optical flow.

1. **Difference.** Where the edited first frame differs from the source's first frame (both on the
   job's pixels): the largest per-channel absolute difference, after a light blur that absorbs JPEG
   and colour-management noise, above ``threshold`` x full scale (default 0.1, i.e. 25 of 255).
   Cleaned: specks removed (opening), nearby parts merged (closing), holes filled, components
   smaller than ``min_area`` of the frame dropped.
2. **Propagation.** Frame t-1 -> t: the object's coarse shift is found by masked template matching
   at low resolution (so fast objects are not lost), then dense DIS optical flow, in a crop around
   the object (scaled so the object is at most FLOW_OBJECT_PX across), gives each interior mask
   pixel its motion; pixels within 3 px of the edge move with an affine motion fitted to the
   interior (flow is smoothed across edges and would drag them along with the background). The
   mask is *forward*-splatted along that motion (revealed background receives nothing, unlike
   backward warping), re-thresholded at half coverage and closed. With
   ``refine`` (default) GrabCut then re-fits the boundary to the frame's colours, but only within
   ``band`` pixels of the propagated boundary: that stops drift from accumulating while bounding
   how far it can go wrong. Without it, shape changes the affine edge cannot follow accumulate.
   **Guard.** Between two consecutive source frames an object neither loses a large share of its area nor
   changes its colour much; when the propagated region does (below ``keep_area`` of the previous frame's area,
   or its mean colour moved by more than ``max_colour_change``: GrabCut taking the object for background, the
   flow dragged onto the background, the object hidden for a moment), the flow result without the refinement
   is used if it passes, else the previous frame's region moved with the last trusted motion.
   Such frames are reported (`Tracked.guarded`), and `coverage_drop` names frames whose region fell to under
   half of frame 0's, which prepare.py turns into a warning.
3. **Output.** Each frame's tracked region is dilated by ``margin`` pixels (a safety margin; the
   tracked core itself is never re-grown, so the margin does not accumulate over frames).

Track through every frame of the source (`picks`: which of them the job keeps): between frames resampled to a
low job rate the motion is large and the tracker loses the object.

Limits: it tracks the motion of the ORIGINAL pixels under the edit, so it assumes the edit modifies
an existing object (recolour, texture, an accessory on something that moves with it). An object
that leaves the frame is lost for good; large occlusions, strong appearance changes (lighting,
motion blur), transparent or very thin objects and objects coloured like their surroundings break
it or make it drift. Check the preview; when it fails, pass a mask (``--mask``) or use SAM2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from config.errors import UserError
from config.progress import Progress, tracked

# Part of a job's mask key: bump it when the algorithm's output changes, so prepared jobs redo their masks.
ALGORITHM_VERSION = 2  # 2: the shrink guard; tracked at the source's rate


# Dense flow runs where the tracked object is at most this many pixels across (finer adds cost, not accuracy).
FLOW_OBJECT_PX = 160


class NoDifferenceError(UserError):
    """The edited frame does not differ from the source frame enough to derive a mask."""


@dataclass(frozen=True)
class AutoMaskSettings:
    threshold: float = 0.1  # difference (fraction of full scale) that counts as edited
    min_area: float = 0.001  # drop difference components smaller than this fraction of the frame
    margin: int | None = None  # output dilation in pixels; None: 0.5% of the longer side (at least 1)
    refine: bool = True  # GrabCut boundary refinement near the propagated boundary
    band: int | None = None  # refinement band in pixels; None: 0.5% of the longer side (at least 2)
    keep_area: float = 0.8  # guard: a frame keeps at least this share of the previous frame's area
    max_colour_change: float = 0.2  # guard: the region's mean colour moves at most this (of full scale) a frame

    def margin_px(self, width: int, height: int) -> int:
        return self.margin if self.margin is not None else max(1, round(0.005 * max(width, height)))

    def band_px(self, width: int, height: int) -> int:
        return self.band if self.band is not None else max(2, round(0.005 * max(width, height)))


def _ellipse(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill regions of False fully enclosed by True (flood fill of the background from the border)."""
    m = np.pad(mask.astype(np.uint8), 1)
    flood = m.copy()
    cv2.floodFill(flood, np.zeros((m.shape[0] + 2, m.shape[1] + 2), np.uint8), (0, 0), 1)
    return (m.astype(bool) | (flood == 0))[1:-1, 1:-1]


def _drop_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    return keep[labels]


def difference_map(source: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """float32 [H, W] in [0, 1]: the largest per-channel |edited - source| after a 1-pixel blur."""
    if source.shape != edited.shape:
        raise ValueError(f"source {source.shape} and edited {edited.shape} frames differ in shape")
    blur = [cv2.GaussianBlur(x.astype(np.float32), (0, 0), 1.0) for x in (source, edited)]
    return np.abs(blur[1] - blur[0]).max(axis=2) / 255.0


def difference_mask(
    source: np.ndarray, edited: np.ndarray, settings: AutoMaskSettings = AutoMaskSettings()
) -> np.ndarray:
    """bool [H, W], True where the edited frame differs from the source frame (cleaned, holes filled).

    Raises NoDifferenceError when nothing is left: the message gives the largest difference found."""
    diff = difference_map(source, edited)
    h, w = diff.shape
    # The blur keeps noise out; the unblurred difference keeps the blur from widening the region.
    sharp = np.abs(edited.astype(np.int16) - source.astype(np.int16)).max(axis=2) / 255.0
    raw = (diff > settings.threshold) & (sharp > settings.threshold / 2)
    mask = cv2.morphologyEx(raw.astype(np.uint8), cv2.MORPH_OPEN, _ellipse(1))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _ellipse(max(1, round(0.01 * max(w, h)))))
    mask = _drop_small(_fill_holes(mask.astype(bool)), max(1, round(settings.min_area * h * w)))
    if not mask.any():
        how = "is identical to" if not diff.any() else f"differs by at most {diff.max():.3f} of full scale from"
        raise NoDifferenceError(
            f"--auto-mask found no edit: the edited frame {how} the source's first frame (threshold "
            f"{settings.threshold:g}, regions under {settings.min_area:.1%} of the frame ignored); pass a mask "
            f"with --mask, or lower --auto-mask-threshold"
        )
    return mask


# ---------------------------------------------------------------------------------- propagation


def _flow_engine() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)  # as accurate as MEDIUM here, 1.6x faster
    dis.setFinestScale(0)  # the presets stop at half resolution: ~7x larger errors on small objects
    return lambda a, b: dis.calc(a, b, None)


def _scaled_flow(
    flow: Callable[[np.ndarray, np.ndarray], np.ndarray], a: np.ndarray, b: np.ndarray, scale: float
) -> np.ndarray:
    """Flow a -> b computed at `scale` (large objects need no full resolution), returned in full-size pixels."""
    if scale >= 1.0:
        return flow(a, np.ascontiguousarray(b))
    h, w = a.shape
    size = (max(16, round(w * scale)), max(16, round(h * scale)))
    small = flow(cv2.resize(a, size, interpolation=cv2.INTER_AREA), cv2.resize(b, size, interpolation=cv2.INTER_AREA))
    res = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    res[..., 0] *= w / size[0]
    res[..., 1] *= h / size[1]
    return res


def _coarse_shift(
    prev: np.ndarray, cur: np.ndarray, mask: np.ndarray, pixels: tuple[np.ndarray, np.ndarray]
) -> tuple[int, int]:
    """Integer (dx, dy) that best moves the masked part of `prev` onto `cur` (masked SSD template
    match at a scale where the object is ~48 px), searching +-75% of the object's size."""
    ys, xs = pixels
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    size = max(y1 - y0, x1 - x0)
    s = min(1.0, 48.0 / size)
    reach = int(np.ceil(0.75 * size)) + 8
    H, W = mask.shape
    sy0, sy1, sx0, sx1 = max(y0 - reach, 0), min(y1 + reach, H), max(x0 - reach, 0), min(x1 + reach, W)

    def small(a: np.ndarray, interp: int = cv2.INTER_AREA) -> np.ndarray:
        return cv2.resize(a, (max(1, round(a.shape[1] * s)), max(1, round(a.shape[0] * s))), interpolation=interp)

    templ = small(prev[y0:y1, x0:x1]).astype(np.float32)
    tmask = small(mask[y0:y1, x0:x1].astype(np.float32), cv2.INTER_LINEAR)
    search = small(cur[sy0:sy1, sx0:sx1]).astype(np.float32)
    if search.shape[0] < templ.shape[0] or search.shape[1] < templ.shape[1] or tmask.max() <= 0:
        return 0, 0
    score = cv2.matchTemplate(search, templ, cv2.TM_SQDIFF, mask=tmask)
    _, _, loc, _ = cv2.minMaxLoc(score)
    return round(loc[0] / s + sx0 - x0), round(loc[1] / s + sy0 - y0)


def _edge_affine(
    mask: np.ndarray, pixels: tuple[np.ndarray, np.ndarray], fx: np.ndarray, fy: np.ndarray, edge: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Motion of the mask pixels with the `edge` px next to the boundary replaced by an affine motion
    fitted (RANSAC) to the interior's flow. Dense flow is smoothed across the object's edge, which drags
    edge pixels toward the background's motion and leaves a trail that grows every frame."""
    ys, xs = pixels
    inner = cv2.erode(mask.astype(np.uint8), _ellipse(edge)).astype(bool)[ys, xs]
    if inner.sum() < 20:  # too thin to have an interior: keep the dense flow
        return fx, fy
    src = np.stack([xs[inner], ys[inner]], 1).astype(np.float32)
    dst = src + np.stack([fx[inner], fy[inner]], 1).astype(np.float32)
    if len(src) > 4000:  # plenty for six parameters
        keep = np.random.default_rng(0).choice(len(src), 4000, replace=False)
        src, dst = src[keep], dst[keep]
    a, _ = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.0)
    if a is None:
        return fx, fy
    ax = a[0, 0] * xs + a[0, 1] * ys + a[0, 2] - xs
    ay = a[1, 0] * xs + a[1, 1] * ys + a[1, 2] - ys
    return np.where(inner, fx, ax), np.where(inner, fy, ay)


def _splat(pixels: tuple[np.ndarray, np.ndarray], fx: np.ndarray, fy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Forward warp: each mask pixel (ys, xs) deposits bilinear weights at pixel + (fx, fy)."""
    H, W = shape
    ys, xs = pixels
    x, y = xs + fx, ys + fy
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    ax, ay = x - x0, y - y0
    acc = np.zeros((H + 2) * (W + 2), np.float64)  # a 1-pixel rim collects what lands outside
    for dx, dy, wgt in ((0, 0, (1 - ax) * (1 - ay)), (1, 0, ax * (1 - ay)), (0, 1, (1 - ax) * ay), (1, 1, ax * ay)):
        flat = np.clip(y0 + dy + 1, 0, H + 1) * (W + 2) + np.clip(x0 + dx + 1, 0, W + 1)
        acc += np.bincount(flat, weights=wgt, minlength=acc.size)
    return acc.reshape(H + 2, W + 2)[1:-1, 1:-1]


def _refine(frame: np.ndarray, prior: np.ndarray, band: int) -> np.ndarray:
    """GrabCut on the frame's colours, free only within `band` px of the prior's boundary."""
    u8 = prior.astype(np.uint8)
    outer, inner = cv2.dilate(u8, _ellipse(band)) > 0, cv2.erode(u8, _ellipse(band)) > 0
    ys, xs = np.nonzero(outer)
    H, W = prior.shape
    pad = 3 * band  # some certain background around the band, for the background colour model
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, H)
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, W)
    box = (slice(y0, y1), slice(x0, x1))
    gc = np.full((y1 - y0, x1 - x0), cv2.GC_BGD, np.uint8)
    gc[outer[box]] = cv2.GC_PR_BGD
    gc[prior[box]] = cv2.GC_PR_FGD
    gc[inner[box]] = cv2.GC_FGD
    if not (gc == cv2.GC_BGD).any():  # the object fills the frame: no background colours to learn from
        return prior
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(frame[box][..., ::-1]), gc, None, *models, 2, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate colour statistics (e.g. a flat frame): keep the flow result
        return prior
    out = prior.copy()
    out[box] = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    return out


@dataclass
class Tracked:
    """A tracked mask: bool [T, H, W] and the frames (indices into it) where the shrink guard stepped in."""

    masks: np.ndarray
    guarded: list[int] = field(default_factory=list)


def _moved(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`mask` shifted by (dx, dy) pixels; what leaves the frame is dropped."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(mask.astype(np.uint8), m, mask.shape[::-1], flags=cv2.INTER_NEAREST) > 0


def propagate_mask(
    frames: np.ndarray, first: np.ndarray, settings: AutoMaskSettings = AutoMaskSettings(),
    progress: Progress | None = None
) -> Tracked:
    """Carry a frame-0 mask (bool [H, W]) through uint8 frames [T, H, W, 3]: the tracked core, bool [T, H, W]."""
    T, H, W = frames.shape[:3]
    if first.shape != (H, W):
        raise ValueError(f"mask {first.shape} does not match frames {frames.shape[1:3]}")
    flow = _flow_engine()
    band = settings.band_px(W, H)
    out = np.zeros((T, H, W), bool)
    out[0] = first
    guarded: list[int] = []
    velocity = (0, 0)  # the last trusted step's motion: where a region the tracker lost probably went
    look = frames[0][first].reshape(-1, 3).astype(np.float32).mean(0) if first.any() else np.zeros(3, np.float32)
    prev_gray = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
    for t in tracked(range(1, T), progress, "mask propagation", T - 1, "frame"):
        gray = cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY)
        prev = out[t - 1]
        if prev.any():
            ys, xs = np.nonzero(prev)
            dx, dy = _coarse_shift(prev_gray, gray, prev, (ys, xs))
            # Dense flow only around where the object lands (a crop with context), from prev shifted
            # by (dx, dy) to the current frame: the residual motion after the coarse shift.
            size = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
            pad = 16 + size // 4
            y0, y1 = max(ys.min() + dy - pad, 0), min(ys.max() + dy + pad + 1, H)
            x0, x1 = max(xs.min() + dx - pad, 0), min(xs.max() + dx + pad + 1, W)
            if y1 - y0 >= 16 and x1 - x0 >= 16:  # else the object has (nearly) left the frame
                m = np.float32([[1, 0, dx - x0], [0, 1, dy - y0]])
                shifted = cv2.warpAffine(prev_gray, m, (x1 - x0, y1 - y0), borderMode=cv2.BORDER_REPLICATE)
                res = _scaled_flow(flow, shifted, gray[y0:y1, x0:x1], min(1.0, FLOW_OBJECT_PX / size))
                qy, qx = np.clip(ys + dy - y0, 0, y1 - y0 - 1), np.clip(xs + dx - x0, 0, x1 - x0 - 1)
                fx, fy = _edge_affine(prev, (ys, xs), dx + res[qy, qx, 0], dy + res[qy, qx, 1])
                moved = _splat((ys, xs), fx, fy, (H, W)) > 0.5
                moved = cv2.morphologyEx(moved.astype(np.uint8), cv2.MORPH_CLOSE, _ellipse(1)).astype(bool)
                core = _refine(frames[t], moved, band) if settings.refine and moved.any() else moved
                # The guard (module doc): the previous area, less what left the frame with the motion, and the
                # previous region's colour.
                floor = settings.keep_area * int(_moved(prev, dx, dy).sum())

                cands = [c for c in (core, moved) if c.sum() >= max(floor, 1)
                         and _colour_distance(frames[t], c, look) <= settings.max_colour_change]
                if cands and cands[0] is core:
                    velocity = _centroid_step(prev, core)
                else:
                    core = cands[0] if cands else _moved(prev, *velocity)
                    guarded.append(t)
                out[t] = core
                if out[t].any() and guarded[-1:] != [t]:  # a guessed region's colour is no reference
                    look = frames[t][out[t]].reshape(-1, 3).astype(np.float32).mean(0)
        prev_gray = gray
    return Tracked(out, guarded)


def _colour_distance(frame: np.ndarray, mask: np.ndarray, look: np.ndarray) -> float:
    """Largest per-channel difference (of full scale) between the mean colour under `mask` and `look`."""
    if not mask.any():
        return 1.0
    return float(np.abs(frame[mask].reshape(-1, 3).astype(np.float32).mean(0) - look).max() / 255.0)


def _centroid_step(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Integer (dx, dy) from the centroid of region `a` to that of `b`."""
    (ya, xa), (yb, xb) = np.argwhere(a).mean(0), np.argwhere(b).mean(0)
    return round(xb - xa), round(yb - ya)


def coverage_drop(masks: np.ndarray, share: float = 0.5) -> list[int]:
    """Frames whose region is under `share` of frame 0's area (while frame 0 has one)."""
    area = masks.reshape(len(masks), -1).sum(1)
    return [int(i) for i in np.flatnonzero(area < share * area[0])] if area[0] else []


def auto_mask(
    frames: np.ndarray, edited_first: np.ndarray, settings: AutoMaskSettings = AutoMaskSettings(),
    progress: Progress | None = None, picks: Sequence[int] | None = None,
) -> Tracked:
    """The edit mask of a clip from its edited first frame: bool [T, H, W], True = may change.

    `frames` are tracked through one by one (pass every source frame, fitted to the job's size); `picks` are the
    indices of the frames the job keeps (default: all), the first of which is the edited frame's."""
    picks = list(range(len(frames))) if picks is None else [int(i) for i in picks]
    frames = frames[picks[0]:picks[-1] + 1]
    picks = [i - picks[0] for i in picks]
    first = difference_mask(frames[0], edited_first, settings)
    run = propagate_mask(frames, first, settings, progress)
    core = run.masks[picks]
    margin = settings.margin_px(frames.shape[2], frames.shape[1])
    if margin:
        core = np.stack([cv2.dilate(c.astype(np.uint8), _ellipse(margin)) > 0 for c in core])
    return Tracked(core, run.guarded)
