"""The per-frame plot of an evaluation (PIL only): kept-region PSNR, edit similarity, warping error.

Three stacked panels sharing the frame axis, one colored line per result, the source's own warping error
dashed gray. PSNR of identical pixels (inf) is drawn on the panel's top edge as a triangle.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from config.atomic import atomic_path

WIDTH, PANEL_H, HEADER_H = 1200, 230, 78
LEFT, RIGHT, TOP_PAD, BOTTOM_PAD = 86, 24, 30, 38
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (23, 190, 207)]
SOURCE_COLOR, GRID, AXIS, TEXT = (110, 110, 110), (225, 225, 225), (60, 60, 60), (20, 20, 20)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(int(math.ceil((hi - first) / step)) + 1)]


def _tick_label(v: float, step: float) -> str:
    if step < 0.01:  # warping errors: 0.0025 reads better than 2.5e-03
        return "0" if abs(v) < step / 1e3 else f"{v:.3g}"
    decimals = next(d for d in range(4) if abs(round(step, d) - step) < 1e-6 * step)  # 0.25 -> 2, 0.5 -> 1
    return f"{v:.{decimals}f}"


class _Panel:
    def __init__(self, draw: ImageDraw.ImageDraw, top: int, frames: int, title: str, ys: list,
                 cap: float | None = None) -> None:
        self.d, self.frames, self.top = draw, frames, top
        self.x0, self.x1 = LEFT, WIDTH - RIGHT
        self.y0, self.y1 = top + TOP_PAD, top + PANEL_H - BOTTOM_PAD
        # +inf values (identical pixels) get their own band above the finite axis
        self.inf_y = self.y0 + 9 if any(y is not None and math.isinf(y) for y in ys) else None
        self.frame_top = self.y0
        if self.inf_y is not None:
            self.y0 += 22
        finite = [y for y in ys if y is not None and math.isfinite(y)] or [0.0, 1.0]
        lo, hi = min(finite), max(finite)
        pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 1e-3)
        self.ticks = nice_ticks(lo - pad, hi + pad if cap is None else min(hi + pad, cap))
        self.lo, self.hi = self.ticks[0], self.ticks[-1]
        draw.text((self.x0, top + 6), title, fill=TEXT, font=_font(16))

    def x(self, i: float) -> float:
        return self.x0 + (self.x1 - self.x0) * (i / max(self.frames - 1, 1))

    def y(self, v: float) -> float:
        v = min(max(v, self.lo), self.hi)
        return self.y1 - (self.y1 - self.y0) * (v - self.lo) / (self.hi - self.lo)

    def axes(self, first_shaded: bool) -> None:
        d, f = self.d, _font(13)
        if first_shaded:  # frame 0 = the edited frame: not in the means
            half = (self.x(1) - self.x(0)) / 2
            d.rectangle([self.x0, self.frame_top, self.x0 + half, self.y1], fill=(242, 242, 242))
        if self.inf_y is not None:
            d.line([(self.x0, self.y0 - 6), (self.x1, self.y0 - 6)], fill=GRID, width=1)
            d.text((self.x0 - 8 - d.textlength("inf", font=f), self.inf_y - 7), "inf", fill=TEXT, font=f)
        step = self.ticks[1] - self.ticks[0]
        for v in self.ticks:
            yy = self.y(v)
            d.line([(self.x0, yy), (self.x1, yy)], fill=GRID)
            label = _tick_label(v, step)
            d.text((self.x0 - 8 - d.textlength(label, font=f), yy - 7), label, fill=TEXT, font=f)
        xstep = max(1, round((self.frames - 1) / 12 / 4) * 4) if self.frames > 13 else 1
        for i in range(0, self.frames, xstep):
            xx = self.x(i)
            d.line([(xx, self.y1), (xx, self.y1 + 4)], fill=AXIS)
            d.text((xx - d.textlength(str(i), font=f) / 2, self.y1 + 6), str(i), fill=TEXT, font=f)
        d.text((self.x1 - d.textlength("frame", font=f), self.y1 + 20), "frame", fill=TEXT, font=f)
        d.rectangle([self.x0, self.frame_top, self.x1, self.y1], outline=AXIS)

    def series(self, xs: list[float], ys: list, color: tuple, dashed: bool = False) -> None:
        """A polyline broken at missing values; inf drawn as a triangle on the top edge."""
        run: list[tuple[float, float]] = []
        for xv, yv in [*zip(xs, ys), (None, None)]:
            if yv is None or xv is None or not math.isfinite(yv):
                self._line(run, color, dashed)
                run = []
                if yv is not None and xv is not None and math.isinf(yv) and self.inf_y is not None:
                    px, py = self.x(xv), self.inf_y
                    self.d.polygon([(px - 6, py + 5), (px + 6, py + 5), (px, py - 5)], fill=color)
                continue
            run.append((self.x(xv), self.y(yv)))
        if len(xs) <= 81:
            for xv, yv in zip(xs, ys):
                if yv is not None and math.isfinite(yv):
                    px, py = self.x(xv), self.y(yv)
                    self.d.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=color)

    def _line(self, pts: list[tuple[float, float]], color: tuple, dashed: bool) -> None:
        if len(pts) < 2:
            return
        if not dashed:
            self.d.line(pts, fill=color, width=2)
            return
        for (ax, ay), (bx, by) in zip(pts, pts[1:]):
            length = math.hypot(bx - ax, by - ay)
            for s in range(0, int(length), 12):
                t0, t1 = s / length, min((s + 7) / length, 1.0)
                self.d.line([(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)],
                            fill=color, width=2)

    def note(self, text: str) -> None:
        """A gray remark right-aligned on the title line."""
        f = _font(13)
        self.d.text((self.x1 - self.d.textlength(text, font=f), self.top + 8), text, fill=(90, 90, 90), font=f)


def _edit_series(results: list[dict]) -> tuple[str, str, list[list]]:
    """The edit-similarity curve: CLIP on the edit region if measured, else 1 - Lab histogram distance."""
    if any(any(v is not None for v in r["per_frame"].get("clip_region", [])) for r in results):
        return ("Edit similarity: CLIP of the edit region vs the edited first frame (higher = closer)", "clip",
                [r["per_frame"]["clip_region"] for r in results])
    curves = [[None if v is None else 1.0 - v for v in r["per_frame"]["hist_distance"]] for r in results]
    return ("Edit similarity: 1 - Lab histogram distance of the edit region vs the edited first frame "
            "(higher = closer)", "color", curves)


def draw_plot(report: dict, path: str | os.PathLike) -> Path:
    """Write the per-frame plot PNG (atomically) and return its path."""
    results, t = report["results"], report["inputs"]["frames"]
    shaded = not report["settings"]["include_first_frame"] and t > 1
    img = Image.new("RGB", (WIDTH, HEADER_H + 3 * PANEL_H), "white")
    d = ImageDraw.Draw(img)
    inp = report["inputs"]
    title = (f"LoRA-Edit evaluation - {inp.get('source') or 'source'} ({t} frames, {inp['width']}x{inp['height']}, "
             f"edit region {inp['edit_coverage']:.1%})")
    d.text((LEFT, 10), title, fill=TEXT, font=_font(17))
    x, f = LEFT, _font(14)
    legend = [(r["label"], COLORS[i % len(COLORS)], False) for i, r in enumerate(results)]
    legend.append(("source (its own warping error)", SOURCE_COLOR, True))
    for label, color, dashed in legend:
        if dashed:
            for s in range(0, 28, 10):
                d.line([(x + s, 48), (x + s + 6, 48)], fill=color, width=3)
        else:
            d.line([(x, 48), (x + 28, 48)], fill=color, width=3)
        d.text((x + 34, 40), label, fill=TEXT, font=f)
        x += 34 + int(d.textlength(label, font=f)) + 24
    if shaded:
        d.text((LEFT, 58), "gray band: frame 0 = the edited frame (not in the means)", fill=(90, 90, 90),
               font=_font(13))

    frames = list(range(t))
    psnr = [r["per_frame"]["psnr_kept"] for r in results]
    p = _Panel(d, HEADER_H, t, "Background kept: PSNR over the kept region vs the source (dB, higher = better)",
               [v for c in psnr for v in c])
    p.axes(shaded)
    for i, c in enumerate(psnr):
        p.series(frames, c, COLORS[i % len(COLORS)])
    if any(v is not None and math.isinf(v) for c in psnr for v in c):
        p.note("triangles in the inf band: identical to the source")
    if all(v is None for c in psnr for v in c):
        p.note("no kept pixels (no mask given?)")

    title, _, curves = _edit_series(results)
    p = _Panel(d, HEADER_H + PANEL_H, t, title, [v for c in curves for v in c], cap=1.0)
    p.axes(shaded)
    for i, c in enumerate(curves):
        p.series(frames, c, COLORS[i % len(COLORS)])
    if all(v is None for c in curves for v in c):
        p.note("not measured (no edited first frame, or an empty edit region)")

    key = "warp_error_edit"
    if inp["edit_coverage"] >= 1.0 or all(v is None for r in results for v in r["per_frame"][key]):
        key = "warp_error"
    where = "edit region" if key == "warp_error_edit" else "whole frame"
    warp = [r["per_frame"][key] for r in results]
    src = report["source"]["per_frame"][key]
    pair_x = [i + 1 for i in range(t - 1)]  # pair (i, i+1) plotted at its later frame
    p = _Panel(d, HEADER_H + 2 * PANEL_H, t, f"Temporal: warping error of frame t-1 -> t, {where} "
               "(source's flow; lower = steadier)", [v for c in [*warp, src] for v in c])
    p.axes(False)
    p.series(pair_x, src, SOURCE_COLOR, dashed=True)
    for i, c in enumerate(warp):
        p.series(pair_x, c, COLORS[i % len(COLORS)])

    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)
