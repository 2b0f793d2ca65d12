"""The evaluation report on disk and on screen: JSON (atomic), the one-screen table, infer.py settings lines.

JSON has no infinity: a PSNR of identical pixels is written as the string "inf"; a metric that cannot be
measured (empty region, no edited frame, no CLIP model) is null.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from config.atomic import write_atomic

REPORT_NAME, PLOT_NAME = "evaluation.json", "evaluation.png"  # what evaluate.py writes into its --out folder
# (group, key, label, better, format): the rows of the summary table, in order
ROWS = (
    ("background", "psnr_kept", "PSNR kept region (dB)", "higher", "{:.2f}"),
    ("background", "ssim_kept", "SSIM kept region", "higher", "{:.4f}"),
    ("background", "psnr_full", "PSNR whole frame (dB)", "higher", "{:.2f}"),
    ("background", "ssim_full", "SSIM whole frame", "higher", "{:.4f}"),
    ("edit", "delta_e", "color dE76 vs edited frame", "lower", "{:.2f}"),
    ("edit", "hist_distance", "Lab histogram distance", "lower", "{:.4f}"),
    ("edit", "clip_region", "CLIP edit region vs edited", "higher", "{:.4f}"),
    ("truth", "psnr_truth", "PSNR vs ground truth (dB)", "higher", "{:.2f}"),
    ("truth", "ssim_truth", "SSIM vs ground truth", "higher", "{:.4f}"),
    ("truth", "psnr_truth_edit", "PSNR vs truth, edit region", "higher", "{:.2f}"),
    ("temporal", "warp_error", "warping error", "lower", "{:.3e}"),
    ("temporal", "warp_error_edit", "warping error, edit region", "lower", "{:.3e}"),
    ("paper", "clip_score", "CLIP score", "higher", "{:.4f}"),
    ("paper", "input_similarity", "input similarity", "higher", "{:.4f}"),
)
SOURCE_KEYS = ("warp_error", "warp_error_edit")  # the only rows where the source has its own value
CLIP_KEYS = ("clip_region", "clip_score", "input_similarity")


def jsonable(x: object) -> object:
    """inf -> "inf" (JSON has no infinity), NaN -> None, numpy scalars -> Python numbers, floats to 7
    significant digits (the metrics are not more precise than that); recursively."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) or type(x).__module__ == "numpy":
        v = float(x)
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return None if math.isnan(v) else float(f"{v:.7g}")
    return x


def _dumps(x: object, indent: int = 0) -> str:
    """Indented JSON with every list of numbers on one line (per-frame lists stay readable)."""
    pad = " " * (indent + 1)
    if isinstance(x, dict) and x:
        items = [f"{pad}{json.dumps(k)}: {_dumps(v, indent + 1)}" for k, v in x.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(x, list) and any(isinstance(v, (dict, list)) for v in x):
        return "[\n" + ",\n".join(pad + _dumps(v, indent + 1) for v in x) + "\n" + " " * indent + "]"
    return json.dumps(x, allow_nan=False)


def write_json(report: dict, path: str | os.PathLike) -> Path:
    """Write the report atomically (temp file in the same folder, then rename)."""
    return write_atomic(path, _dumps(jsonable(report)) + "\n")


def _fmt(value: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else fmt.format(value)


def sidecar_line(label: str, sc: dict) -> str:
    """One line of an infer.py run's settings."""
    loras = ", ".join(f"{Path(x['path']).name} x{x['weight']:g}" for x in sc.get("loras") or []) or "none"
    bits = [f"seed {sc.get('seed')}", f"{sc.get('steps')} steps", f"guidance {sc.get('guidance')}",
            f"shift {sc.get('shift')}", str(sc.get("scheduler")), f"preset {sc.get('mask_preset')}",
            f"LoRA {loras}"]
    if sc.get("composite"):
        bits.append("composite")
    return f"{label}: " + ", ".join(bits)


def summary_text(report: dict, files: dict[str, Path] | None = None) -> str:
    """The one-screen summary: the inputs, a table of the means (one column per result), notes."""
    inp, results, settings = report["inputs"], report["results"], report["settings"]
    n = len(results)
    source = inp.get("source") or "the source"
    lines = [f"evaluated {n} result{'s' if n > 1 else ''} against {source}: {inp['frames']} frames "
             f"{inp['width']}x{inp['height']} at {inp['fps']:g} fps, edit region {inp['edit_coverage']:.1%} "
             "of the pixels"]
    span = settings["mean_frames"]
    if span is None:
        lines.append("no frame to average (a 1-frame clip: pass --include-first-frame)")
    elif settings["include_first_frame"]:
        lines.append(f"means over frames {span[0]}-{span[1]}")
    else:
        lines.append(f"means over frames {span[0]}-{span[1]} (frame 0 is the edited frame: per-frame values in "
                     "the report include it, means do not)")
    labels = [r["label"] for r in results]
    widths = [max(len(x), 9) for x in labels]
    head = f"{'':<11}{'metric':<28}{'better':<8}{'source':>10}" + "".join(f"  {x:>{w}}" for x, w in
                                                                           zip(labels, widths))
    lines += ["", head]
    skipped: list[tuple[str, str]] = []  # (key, label) of rows no result has a value for
    last_group = None
    for group, key, label, better, fmt in ROWS:
        values = [r["summary"].get(key) for r in results]
        if all(v is None for v in values):
            if group != "truth":  # without --truth these rows are not expected
                skipped.append((key, label))
            continue
        src = _fmt(report["source"].get(key), fmt) if key in SOURCE_KEYS else ""
        cells = "".join(f"  {_fmt(v, fmt):>{w}}" for v, w in zip(values, widths))
        lines.append(f"{group if group != last_group else '':<11}{label:<28}{better:<8}{src:>10}{cells}")
        last_group = group
    lines.append("")
    lines += [sidecar_line(r["label"], r["sidecar"]) for r in results if r.get("sidecar")]
    if skipped:
        why = []
        if not settings["clip_model"] and any(k in CLIP_KEYS for k, _ in skipped):
            why.append("CLIP metrics need --clip-model DIR")
        if inp.get("edited_frame") is None:
            why.append("edit metrics need the edited first frame")
        if not inp.get("mask"):
            why.append("background metrics need a mask")
        lines.append(f"not available: {', '.join(label for _, label in skipped)}"
                     + (f" ({'; '.join(why)})" if why else ""))
    lines.append("not measured: LPIPS (not implemented), DeQA (out of scope)")
    for name, path in (files or {}).items():
        lines.append(f"{name + ':':<12}{path}")
    return "\n".join(lines)
