"""Frame metrics of an edit, as pure functions on numpy arrays (uint8 RGB frames [H, W, 3]).

Regions are bool [H, W] arrays of the pixels that count (None = the whole frame). A metric over an
empty region is None ("not measurable"), never 0.

* PSNR: 10 log10(255^2 / MSE), the MSE over the region's pixels and the 3 channels; identical pixels
  give +inf.
* SSIM over a region (Wang et al. 2004: Gaussian window sigma 1.5, 11x11, C1 = (0.01*255)^2,
  C2 = (0.03*255)^2, per RGB channel, channels averaged): the local means, variances and covariance
  are taken with the Gaussian window restricted to the region's pixels and renormalized (normalized
  convolution), and the SSIM map is averaged over the region's pixels. So pixels outside the region
  never enter the score: a result that changes only the edit region keeps a kept-region SSIM of
  exactly 1. The whole frame is the same formula with the region = every pixel (the window is
  renormalized at the frame border instead of padding it).
* Color: CIE Lab (D65, cv2), the mean color of a region and a Lab histogram (8 L x 16 a x 16 b bins)
  compared with the Hellinger distance (0 = same distribution, 1 = disjoint).
* Warping error (Lai et al. 2018, "Learning Blind Video Temporal Consistency"): frame t+1 warped back
  to frame t with the optical flow t -> t+1, MSE against frame t in [0, 1] units over the pixels whose
  flow is valid: inside the frame and forward-backward consistent (Sundaram et al. 2010:
  |F + B(x + F)|^2 <= 0.01 (|F|^2 + |B(x + F)|^2) + 0.5). The flow comes from the SOURCE (OpenCV DIS),
  so a result is judged on the source's motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PEAK = 255.0
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
SSIM_C1 = (0.01 * PEAK) ** 2
SSIM_C2 = (0.03 * PEAK) ** 2
LAB_BINS = (8, 16, 16)
LAB_RANGE = ((0.0, 100.0), (-128.0, 128.0), (-128.0, 128.0))
FB_REL, FB_ABS = 0.01, 0.5  # forward-backward consistency thresholds (Sundaram et al.)


def _region_or_all(region: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    return np.ones(shape[:2], dtype=bool) if region is None else np.asarray(region, dtype=bool)


# ------------------------------------------------------------------------------- pixel fidelity


def mse(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float | None:
    """Mean squared difference (0..255 units) over the region's pixels and channels; None if empty."""
    r = _region_or_all(region, a.shape)
    if not r.any():
        return None
    d = a[r].astype(np.float64) - b[r].astype(np.float64)
    return float(np.mean(d * d))


def psnr_from_mse(value: float | None, peak: float = PEAK) -> float | None:
    if value is None:
        return None
    return float("inf") if value == 0 else float(10.0 * np.log10(peak * peak / value))


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float | None:
    """PSNR in dB over the region (inf for identical pixels, None for an empty region)."""
    return psnr_from_mse(mse(a, b, region))


def _window(x: np.ndarray) -> np.ndarray:
    # constant-0 border: with the normalizing weight blurred the same way, the border is renormalized
    return cv2.GaussianBlur(x, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_CONSTANT)


def ssim_map(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """SSIM per pixel [H, W] (channels averaged), local statistics over the region's pixels only.

    Values outside the region are meaningless (use them only through `ssim`)."""
    # float64: variances are differences of large moments (E[x^2] - E[x]^2); float32 is off by ~1e-4 SSIM
    m = _region_or_all(region, a.shape).astype(np.float64)
    x = a.astype(np.float64) * m[..., None]
    y = b.astype(np.float64) * m[..., None]
    w = _window(m)[..., None]
    inv = 1.0 / np.maximum(w, 1e-12)
    mx, my = _window(x) * inv, _window(y) * inv
    sxx = _window(x * x) * inv - mx * mx
    syy = _window(y * y) * inv - my * my
    sxy = _window(x * y) * inv - mx * my
    num = (2 * mx * my + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mx * mx + my * my + SSIM_C1) * (sxx + syy + SSIM_C2)
    return (num / den).mean(axis=2)


def ssim(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float | None:
    """SSIM over the region: the regional SSIM map averaged over the region's pixels (None if empty)."""
    r = _region_or_all(region, a.shape)
    if not r.any():
        return None
    return float(ssim_map(a, b, r)[r].mean())


# ------------------------------------------------------------------------------------- color


def lab_pixels(img: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """CIE Lab [N, 3] (L 0..100) of the region's pixels of a uint8 RGB image."""
    px = img[_region_or_all(region, img.shape)].astype(np.float32) / 255.0
    if len(px) == 0:
        return np.zeros((0, 3), np.float32)
    return cv2.cvtColor(px[:, None, :], cv2.COLOR_RGB2Lab)[:, 0, :]


def mean_lab(img: np.ndarray, region: np.ndarray | None = None) -> np.ndarray | None:
    px = lab_pixels(img, region)
    return px.mean(axis=0).astype(np.float64) if len(px) else None


def delta_e(lab1: np.ndarray | None, lab2: np.ndarray | None) -> float | None:
    """CIE76 color difference between two Lab colors (about 2.3 = just noticeable)."""
    if lab1 is None or lab2 is None:
        return None
    return float(np.linalg.norm(np.asarray(lab1) - np.asarray(lab2)))


def lab_histogram(img: np.ndarray, region: np.ndarray | None = None) -> np.ndarray | None:
    """Normalized Lab histogram of the region (None if empty)."""
    px = lab_pixels(img, region)
    if not len(px):
        return None
    h, _ = np.histogramdd(px, bins=LAB_BINS, range=LAB_RANGE)
    return h / h.sum()


def hellinger(p: np.ndarray | None, q: np.ndarray | None) -> float | None:
    """Hellinger distance of two normalized histograms, in [0, 1]."""
    if p is None or q is None:
        return None
    bc = float(np.sum(np.sqrt(p * q)))
    return float(np.sqrt(max(0.0, 1.0 - bc)))


# ------------------------------------------------------------------------------ temporal


@dataclass
class WarpPair:
    """How to warp frame t+1 onto frame t: remap coordinates [H, W, 2] and the valid pixels [H, W]."""

    coords: np.ndarray
    valid: np.ndarray


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def flow_pairs(frames: np.ndarray) -> list[WarpPair]:
    """Per consecutive pair (t, t+1) of `frames` [T, H, W, 3]: DIS optical flow both ways and the
    occlusion mask (forward-backward consistency, in-frame)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    h, w = frames.shape[1:3]
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), axis=-1)
    gray = [_gray(f) for f in frames]
    pairs = []
    for t in range(len(frames) - 1):
        fwd = dis.calc(gray[t], gray[t + 1], None)  # gray[t](x) ~ gray[t+1](x + fwd(x))
        bwd = dis.calc(gray[t + 1], gray[t], None)
        coords = grid + fwd
        bwd_at = cv2.remap(bwd, coords[..., 0], coords[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        gap = np.sum((fwd + bwd_at) ** 2, axis=-1)
        consistent = gap <= FB_REL * (np.sum(fwd**2, axis=-1) + np.sum(bwd_at**2, axis=-1)) + FB_ABS
        inside = (coords[..., 0] >= 0) & (coords[..., 0] <= w - 1) & (coords[..., 1] >= 0) & (coords[..., 1] <= h - 1)
        pairs.append(WarpPair(coords, consistent & inside))
    return pairs


def warp_back(frame: np.ndarray, pair: WarpPair) -> np.ndarray:
    """Frame t+1 warped onto frame t's pixels (float32, 0..255)."""
    c = pair.coords
    return cv2.remap(frame.astype(np.float32), c[..., 0], c[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def warp_errors(frames: np.ndarray, pairs: list[WarpPair], regions: np.ndarray | None = None) -> list[float | None]:
    """Warping error of each consecutive pair (t, t+1) of `frames` with the given flows: MSE in [0, 1]
    units over valid pixels (and `regions[t]` if given). None where no pixel is valid."""
    if len(pairs) != len(frames) - 1:
        raise ValueError(f"{len(pairs)} flow pairs for {len(frames)} frames")
    out: list[float | None] = []
    for t, pair in enumerate(pairs):
        valid = pair.valid if regions is None else pair.valid & regions[t]
        if not valid.any():
            out.append(None)
            continue
        d = (frames[t].astype(np.float32) - warp_back(frames[t + 1], pair))[valid] / PEAK
        out.append(float(np.mean(d.astype(np.float64) ** 2)))
    return out


# ------------------------------------------------------------------------------------ crops


def square_box(region: np.ndarray, margin: float = 0.1) -> tuple[int, int, int, int] | None:
    """A square (x0, y0, x1, y1) around the region's bounding box, `margin` larger, shifted to lie in
    the frame (CLIP's processor center-crops to a square: a square crop keeps all of the region)."""
    ys, xs = np.nonzero(region)
    if len(xs) == 0:
        return None
    h, w = region.shape
    side = min(max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) * (1 + margin), w, h)
    side = max(int(round(side)), 1)
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return x0, y0, x0 + side, y0 + side


def crop(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return img[y0:y1, x0:x1]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays (b may be [1, D]), in [-1, 1]."""
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)
