"""One number for an edit result without ground truth: what an edit job knows a good result is.

An edit job knows three things about its answer: outside the mask it equals the source, inside the mask it
carries the edited first frame's appearance, and it moves as the source moves. Each term below maps one of
evaluate.py's means (engine.evaluate.job.score_result, frames 1..T-1) to [0, 1], higher = better, and the
combined score is their weighted mean over the terms that could be measured:

  term        from                                       mapping                               weight
  kept        psnr_kept (dB, the kept region vs source)   (psnr - 10) / 30, clipped: 10 -> 0, 40 -> 1   0.35
  kept_ssim   ssim_kept                                    as is (clipped to 0..1)                      0.15
  appearance  hist_distance (Lab histogram, Hellinger)     1 - distance                                 0.20
  colour      delta_e (mean Lab colour, CIE76)             1 - dE / 50, clipped                         0.20
  motion      warp_error_edit with the source's flow       source's / (source's + result's)             0.10
  clip        clip_region (with a CLIP model)              (similarity - 0.5) / 0.5, clipped            0.20

The background terms weigh half: the kept region is most of the frame and the part a LoRA most often damages;
the edit region's appearance (histogram and mean colour) the other 0.4, motion the rest (a frozen edit region
has a low warping error, so motion alone would favour a still edit, hence its small weight). The motion term is
relative to the source's own warping error in the same region, so it is 0.5 for a result as steady as the source.
benchmarks/preview_select.py measures how well the combination ranks a run's previews against the ground truth.
"""

from __future__ import annotations

import math

WEIGHTS = {"kept": 0.35, "kept_ssim": 0.15, "appearance": 0.20, "colour": 0.20, "motion": 0.10, "clip": 0.20}


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def _finite(x: object) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x):
        return float(x)
    return None


def terms(summary: dict, source_warp_edit: float | None) -> dict[str, float]:
    """The measurable terms of a score_result summary, each in [0, 1] (higher = better)."""
    out: dict[str, float] = {}
    psnr = _finite(summary.get("psnr_kept"))
    if psnr is not None:  # +inf: identical kept pixels
        out["kept"] = _clip01((psnr - 10.0) / 30.0)
    if (ssim := _finite(summary.get("ssim_kept"))) is not None:
        out["kept_ssim"] = _clip01(ssim)
    if (hist := _finite(summary.get("hist_distance"))) is not None:
        out["appearance"] = _clip01(1.0 - hist)
    if (de := _finite(summary.get("delta_e"))) is not None:
        out["colour"] = _clip01(1.0 - de / 50.0)
    warp, src = _finite(summary.get("warp_error_edit")), _finite(source_warp_edit)
    if warp is not None and src is not None and warp + src > 0:
        out["motion"] = src / (src + warp)
    if (clip := _finite(summary.get("clip_region"))) is not None:
        out["clip"] = _clip01((clip - 0.5) / 0.5)
    return out


def combined_score(summary: dict, source_warp_edit: float | None, weights: dict[str, float] | None = None
                   ) -> float | None:
    """The weighted mean of `terms` (None when none is measurable)."""
    weights = WEIGHTS if weights is None else weights
    parts = terms(summary, source_warp_edit)
    total = sum(weights.get(k, 0.0) for k in parts)
    if not parts or total <= 0:
        return None
    return sum(weights.get(k, 0.0) * v for k, v in parts.items()) / total
