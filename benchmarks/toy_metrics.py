"""Scores of one toy edit against its exact ground truth, and the ablation's table and image grid.

Every score is over frames 1..T-1 (frame 0 is the given edited frame under every variant):
* whole frame: PSNR (of the MSE over those frames) and SSIM against the ground-truth edited clip;
* kept region (outside the edited shape's mask) and edit region (inside it): PSNR and SSIM against the
  ground-truth edited clip (`engine.metrics`, region-restricted SSIM);
* color error: CIE76 difference of the mean Lab color of the edit region, result vs ground truth;
* trajectory error: distance between the centroids of the edited shape in the result and in the ground
  truth, the shape found the same way in both: the pixels within `COLOR_TOL` (Lab) of the ground-truth
  edit color. A frame where the result has no such pixel counts `LOST_PENALTY` pixels and lowers the
  detection rate;
* motion error: the same centroid distance with the shape found whatever its color: the pixels within
  the ground truth's silhouette neighbourhood that differ (> `COLOR_TOL` Lab) from the clip rendered
  *without* the edited shape. It separates "follows the motion" from "has the right color".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from engine.evaluate import metrics

COLOR_TOL = 25.0  # Lab distance: a pixel "has the edit color"
LOST_PENALTY = 16.0  # pixels (half the 32 px frame) for a frame where the edited shape is not found
SCORES = ("whole_psnr", "whole_ssim", "kept_psnr", "kept_ssim", "edit_psnr", "edit_ssim", "color_error",
          "trajectory_error", "detected", "motion_error")


def _centroid(frame: np.ndarray, target_lab: np.ndarray) -> np.ndarray | None:
    lab = metrics.lab_pixels(frame).reshape(frame.shape[0], frame.shape[1], 3)
    hit = np.linalg.norm(lab - target_lab, axis=-1) < COLOR_TOL
    if not hit.any():
        return None
    ys, xs = np.nonzero(hit)
    return np.array([xs.mean(), ys.mean()])


def shape_centroid(frame: np.ndarray, without: np.ndarray, others: np.ndarray) -> np.ndarray | None:
    """Centroid of the pixels that differ from the clip without the shape, other shapes' pixels excluded."""
    diff = np.linalg.norm(metrics.lab_pixels(frame).reshape(frame.shape) - metrics.lab_pixels(without).reshape(
        frame.shape), axis=-1)
    hit = (diff > COLOR_TOL) & ~others
    if not hit.any():
        return None
    ys, xs = np.nonzero(hit)
    return np.array([xs.mean(), ys.mean()])


def score_edit(result: np.ndarray, truth: np.ndarray, mask: np.ndarray, without: np.ndarray | None = None,
               others: np.ndarray | None = None) -> dict[str, float]:
    """Means over frames 1..T-1 of every score in SCORES; result/truth uint8 [T, H, W, 3], mask bool [T, H, W];
    `without` the clip rendered without the edited shape and `others` the other shapes' masks (motion error)."""
    per: dict[str, list[float]] = {k: [] for k in SCORES}
    for t in range(1, len(truth)):
        keep, edit = ~mask[t], mask[t]
        per["whole_ssim"].append(metrics.ssim(result[t], truth[t]))
        per["kept_psnr"].append(min(metrics.psnr(result[t], truth[t], keep), 100.0))
        per["kept_ssim"].append(metrics.ssim(result[t], truth[t], keep))
        if not edit.any():  # the shape left the frame: nothing to score in the edit region
            continue
        per["edit_psnr"].append(min(metrics.psnr(result[t], truth[t], edit), 100.0))
        per["edit_ssim"].append(metrics.ssim(result[t], truth[t], edit))
        target = metrics.mean_lab(truth[t], edit)
        per["color_error"].append(metrics.delta_e(metrics.mean_lab(result[t], edit), target))
        want, got = _centroid(truth[t], target), _centroid(result[t], target)
        if want is None:
            continue  # fully occluded in the ground truth
        per["detected"].append(float(got is not None))
        per["trajectory_error"].append(LOST_PENALTY if got is None else float(np.linalg.norm(got - want)))
        if without is not None:
            other = others[t] if others is not None else np.zeros_like(edit)
            want, got = shape_centroid(truth[t], without[t], other), shape_centroid(result[t], without[t], other)
            if want is not None:
                per["motion_error"].append(LOST_PENALTY if got is None else float(np.linalg.norm(got - want)))
    scores = {k: float(np.mean(v)) if v else float("nan") for k, v in per.items()}
    scores["whole_psnr"] = future_psnr(result, truth)
    return scores


def future_psnr(result: np.ndarray, truth: np.ndarray) -> float:
    """Whole-frame PSNR over frames 1..T-1 (the MSE averaged over those frames)."""
    mse = np.mean([metrics.mse(result[t], truth[t]) for t in range(1, len(truth))])
    return float(metrics.psnr_from_mse(float(mse)))


def summarize(rows: Sequence[dict], key: str) -> dict[str, dict[str, float]]:
    """Per value of rows[key]: mean, std and n of every numeric score."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r[key] for r in rows):
        group = [r for r in rows if r[key] == name]
        stats: dict[str, float] = {"n": len(group)}
        for score in group[0]:
            vals = [r[score] for r in group if isinstance(r.get(score), float) and not math.isnan(r[score])]
            if vals and score != key:
                stats[score] = float(np.mean(vals))
                stats[score + "_std"] = float(np.std(vals))
        out[name] = stats
    return out


def markdown_table(summary: dict[str, dict[str, float]], labels: dict[str, str]) -> str:
    cols = [("whole_psnr", "PSNR dB", 2), ("whole_ssim", "SSIM", 3), ("kept_psnr", "kept PSNR dB", 2),
            ("kept_ssim", "kept SSIM", 3), ("edit_psnr", "edit PSNR dB", 2),
            ("edit_ssim", "edit SSIM", 3), ("color_error", "color err (Lab)", 1),
            ("trajectory_error", "trajectory err px", 2), ("detected", "shape found", 2),
            ("motion_error", "motion err px", 2)]
    lines = ["| variant | " + " | ".join(c[1] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for name, s in summary.items():
        cells = [f"{s[k]:.{d}f} ± {s[k + '_std']:.{d}f}" if k in s else "-" for k, _, d in cols]
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def image_grid(rows: Sequence[tuple[str, np.ndarray]], scale: int = 4) -> Image.Image:
    """One labelled row of frames per (label, uint8 [T, H, W, 3]), frames upscaled (nearest)."""
    label_w, gap = 150, 2
    t, h, w, _ = rows[0][1].shape
    cell = (w * scale + gap, h * scale + gap)
    grid = Image.new("RGB", (label_w + t * cell[0], len(rows) * cell[1]), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (label, frames) in enumerate(rows):
        draw.text((4, r * cell[1] + cell[1] // 2 - 6), label, fill=(0, 0, 0))
        for i, f in enumerate(frames):
            tile = Image.fromarray(f).resize((w * scale, h * scale), Image.NEAREST)
            grid.paste(tile, (label_w + i * cell[0], r * cell[1]))
    return grid


def paired(rows: Sequence[dict], v: str, base: str, score: str, lower: bool,
           where: dict | None = None) -> tuple[list[float], int]:
    """Paired differences v - base of `score` (same clip and seed; rows matching `where`) and how many favour v."""
    by = {(r["variant"], r["clip"], r["seed"]): r for r in rows
          if all(r.get(k) == val for k, val in (where or {}).items())}
    diffs = [by[(v, c, s)][score] - by[(base, c, s)][score] for (name, c, s) in by
             if name == v and (base, c, s) in by]
    diffs = [d for d in diffs if not math.isnan(d)]
    return diffs, sum((d < 0) if lower else (d > 0) for d in diffs)


def paired_claims(rows: Sequence[dict], claims: Sequence[tuple[str, str, str, str, bool]]) -> list[str]:
    """Markdown lines: each (text, variant, baseline, score, lower is better) claim's paired difference,
    mean ± std, and how many runs agree."""
    lines = []
    for text, v, base, score, lower in claims:
        diffs, wins = paired(rows, v, base, score, lower)
        if diffs:
            lines.append(f"- {text}: {v} - {base} {score} = {np.mean(diffs):+.2f} ± {np.std(diffs):.2f} "
                         f"({'lower' if lower else 'higher'} is better; {v} better in {wins}/{len(diffs)} runs)")
    return lines
