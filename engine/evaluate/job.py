"""evaluate.py's job function `run_evaluation`: the inputs (from a job config or explicit paths), the metrics per
result, the report and its files.

Every result is scored against the same source frames, edit mask and edited first frame:

* background (kept region = mask False): PSNR and SSIM vs the source, and over the whole frame for contrast;
* edit fidelity: mean Lab color (CIE76 delta E) and Lab-histogram Hellinger distance of the result's edit
  region vs the edited first frame's edit region; with a CLIP model, CLIP similarity of a square crop
  around the edit region vs the same crop of the edited frame;
* temporal: warping error of consecutive result frames with the source's optical flow, next to the
  source's own warping error (whole frame and edit region);
* with a ground-truth edited clip (`--truth`, e.g. the toy world's exact edits): PSNR and SSIM of the whole
  frame and PSNR of the edit region against it;
* the paper's Table 1 (with a CLIP model): CLIP score = CLIP similarity of each result frame to the edited
  first frame; input similarity = CLIP similarity of each result frame to the source frame at that index.

Means cover frames 1..T-1: frame 0 of a loraedit result is the edited frame itself (its background may
differ from the source by design, and it trivially matches the edited frame). Per-frame values include
frame 0. Warping errors average over all pairs (t, t+1), including (0, 1): the hand-over from the edited
frame to the generated ones is part of the motion. Kept-region PSNR over several frames is the PSNR of the
pooled MSE (a mean of per-frame PSNRs is inf as soon as one frame is identical).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

import media
from config.atomic import ensure_output_folder
from config.errors import UserError
from config.progress import Progress, as_progress, report
from config.schema import Config
from engine.evaluate import metrics as M

if TYPE_CHECKING:
    from engine.evaluate.clip import ClipImageEncoder

REPORT_VERSION = 1
FLOW_METHOD = "OpenCV DIS optical flow (medium preset) on the source's luma, forward-backward consistency checked"
NOT_MEASURED = {
    "lpips": "not implemented (needs LPIPS/AlexNet weights this tool does not load)",
    "deqa": "out of scope (the paper's DeQA-Score needs its own multimodal model)",
}
SIDECAR_KEYS = ("seed", "steps", "guidance", "shift", "scheduler", "mask_preset", "composite", "prompt")


class EvalInputError(UserError):
    """Inputs that cannot be compared (frame counts, sizes, missing files)."""


@dataclass
class ResultVideo:
    path: Path
    frames: np.ndarray  # uint8 [T, H, W, 3]
    sidecar: dict | None = None  # settings from infer.py's result.json beside it


@dataclass
class EvalInputs:
    source: np.ndarray  # uint8 [T, H, W, 3]
    edit_mask: np.ndarray  # bool [T, H, W], True = may change
    edited_first: np.ndarray | None  # uint8 [H, W, 3]
    fps: float
    results: list[ResultVideo]
    origin: dict = field(default_factory=dict)  # where the inputs came from, for the report
    truth: np.ndarray | None = None  # uint8 [T, H, W, 3]: the exact edited clip, when one exists


def read_truth(path: str | Path, source: np.ndarray, fps: float) -> np.ndarray:
    """The ground-truth edited clip (video or frame folder), checked against the source frame for frame."""
    path = Path(path)
    if not path.exists():
        raise EvalInputError(f"{path}: no such ground-truth file or folder")
    frames = media.read_frames(path, fps=fps).frames
    if frames.shape[:3] != source.shape[:3]:
        raise EvalInputError(f"ground truth {path} has {_geometry(frames)} but the source has {_geometry(source)}")
    return frames


def _geometry(frames: np.ndarray) -> str:
    return f"{frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}"


def read_sidecar(result: Path) -> dict | None:
    """The generation settings from infer.py's result.json beside a result (a video, or its frames/ folder)."""
    path = result.parent / "result.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        warnings.warn(f"{path}: unreadable ({e}); not reporting its settings", stacklevel=2)
        return None
    if not isinstance(data, dict) or "config" not in data:
        return None
    out = {"file": str(path), **{k: data.get(k) for k in SIDECAR_KEYS}}
    out["loras"] = [{"path": x.get("path"), "weight": x.get("weight")} for x in data.get("loras", [])]
    return out


def read_result(path: str | Path, source: np.ndarray, source_name: str, fps: float) -> ResultVideo:
    """A result video / frame folder, checked against the source's frame count and size."""
    path = Path(path)
    if not path.exists():
        raise EvalInputError(f"{path}: no such result file or folder")
    frames = media.read_frames(path, fps=fps).frames
    if frames.shape[:3] != source.shape[:3]:
        raise EvalInputError(f"result {path} has {_geometry(frames)} but the source {source_name} has "
                             f"{_geometry(source)}; a result must match the source frame for frame")
    return ResultVideo(path, frames, read_sidecar(path))


def inputs_from_config(cfg: Config, results: list[str], truth: str | None = None) -> EvalInputs:
    """The job's aligned media (as train.py/infer.py see them), its results (default: infer.py's) and the
    ground-truth edited clip if there is one."""
    from datasets.job import load_job
    from engine.infer.job import default_out

    job = load_job(cfg, edited=bool(cfg.data.edited_frame))
    src_name = f"{cfg.data.video} (the window of {cfg.source or 'the config'})"
    paths = [Path(r) for r in results]
    if not paths:
        default = default_out(cfg) / "result.mp4"
        if not default.is_file():
            raise EvalInputError(f"{default}: no result to evaluate (infer.py writes it there: run it first, "
                                 "or give --result PATH)")
        paths = [default]
    origin = {"config": cfg.source, "source": cfg.data.video, "mask": cfg.data.mask or None,
              "edited_frame": cfg.data.edited_frame or None, "truth": truth}
    return EvalInputs(job.frames, job.edit_mask, job.edited_first, job.fps,
                      [read_result(p, job.frames, src_name, job.fps) for p in paths], origin,
                      read_truth(truth, job.frames, job.fps) if truth else None)


def _check_aspect(w0: int, h0: int, w: int, h: int, path: str | Path, what: str) -> None:
    if abs((w0 / h0) / (w / h) - 1.0) > 0.01:
        raise EvalInputError(f"{what} {path} is {w0}x{h0} but the source frames are {w}x{h} (another aspect ratio)")


def fit_image(img: np.ndarray, w: int, h: int, path: str | Path, what: str = "edited frame") -> np.ndarray:
    """An image [h0, w0, 3] at the frames' size (resized if it has their aspect ratio)."""
    h0, w0 = img.shape[:2]
    if (h0, w0) == (h, w):
        return img
    _check_aspect(w0, h0, w, h, path, what)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if w0 > w else cv2.INTER_CUBIC)


def fit_mask(mask: np.ndarray, w: int, h: int, path: str | Path) -> np.ndarray:
    """A bool mask stack [T, h0, w0] at the frames' size (nearest, as the job loader resizes masks)."""
    h0, w0 = mask.shape[1:3]
    if (h0, w0) == (h, w):
        return mask
    _check_aspect(w0, h0, w, h, path, "mask")
    return np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) for m in mask]) > 0


def inputs_from_paths(source: str | Path, results: list[str], mask: str | None = None,
                      edited_frame: str | None = None, fps: float = 16.0, threshold: float = 0.5,
                      truth: str | None = None) -> EvalInputs:
    """Explicit files: the source and results as they are (video, image folder at `fps`, or one image),
    the mask (white = edit; resized to the frames, nearest) and the edited first frame (resized)."""
    from masks.io import read_mask

    clip = media.read_frames(source, fps=fps)
    frames = clip.frames
    t, h, w = frames.shape[:3]
    if mask:
        edit = read_mask(mask, clip.timestamps, fps=clip.fps or fps, threshold=threshold)
        edit = fit_mask(edit, w, h, mask)
    else:
        edit = np.ones((t, h, w), dtype=bool)
    edited = fit_image(media.read_image(edited_frame), w, h, edited_frame) if edited_frame else None
    origin = {"config": None, "source": str(source), "mask": mask, "edited_frame": edited_frame, "truth": truth}
    return EvalInputs(frames, edit, edited, fps, [read_result(p, frames, str(source), fps) for p in results], origin,
                      read_truth(truth, frames, fps) if truth else None)


# ------------------------------------------------------------------------------------- scoring


def _mean(values: list, frames: range | None = None) -> float | None:
    picked = [values[i] for i in (frames if frames is not None else range(len(values)))]
    picked = [v for v in picked if v is not None]
    return float(np.mean(picked)) if picked else None


@dataclass
class References:
    """What every result is compared with, computed once (`references`): the source's optical flow, the edited
    frame's edit-region colour and, with a CLIP model, its embeddings."""

    pairs: list[M.WarpPair]
    ref_lab: np.ndarray | None
    ref_hist: np.ndarray | None
    source_emb: np.ndarray | None = None
    edited_emb: np.ndarray | None = None
    edited_crop_emb: np.ndarray | None = None


def _clip_per_frame(clip: ClipImageEncoder, result: np.ndarray, edit: np.ndarray, shared: References
                    ) -> dict[str, list]:
    """CLIP similarities per frame: full frame vs edited frame (CLIP score), vs source (input similarity),
    edit-region crop vs the edited frame's crop."""
    t = len(result)
    emb = clip.embed(list(result))
    out: dict[str, list] = {"input_similarity": M.cosine_rows(emb, shared.source_emb).tolist(),
                            "clip_score": [None] * t, "clip_region": [None] * t}
    if shared.edited_emb is not None:
        out["clip_score"] = M.cosine_rows(emb, shared.edited_emb).tolist()
    if shared.edited_crop_emb is not None:
        boxes = [M.square_box(m) for m in edit]
        idx = [i for i, b in enumerate(boxes) if b is not None]
        if idx:
            crops = clip.embed([M.crop(result[i], boxes[i]) for i in idx])
            for i, s in zip(idx, M.cosine_rows(crops, shared.edited_crop_emb)):
                out["clip_region"][i] = float(s)
    return out


def score_result(res: ResultVideo, inputs: EvalInputs, shared: References, clip: ClipImageEncoder | None,
                 mean_frames: range) -> dict:
    """Per-frame metrics and their means for one result."""
    src, edit, result = inputs.source, inputs.edit_mask, res.frames
    kept = ~edit
    mse_kept = [M.mse(result[t], src[t], kept[t]) for t in range(len(result))]
    mse_full = [M.mse(result[t], src[t]) for t in range(len(result))]
    per: dict[str, list] = {
        "psnr_kept": [M.psnr_from_mse(m) for m in mse_kept],
        "ssim_kept": [M.ssim(result[t], src[t], kept[t]) for t in range(len(result))],
        "psnr_full": [M.psnr_from_mse(m) for m in mse_full],
        "ssim_full": [M.ssim(result[t], src[t]) for t in range(len(result))],
        "delta_e": [M.delta_e(M.mean_lab(f, m), shared.ref_lab) for f, m in zip(result, edit)],
        "hist_distance": [M.hellinger(M.lab_histogram(f, m), shared.ref_hist) for f, m in zip(result, edit)],
        "warp_error": M.warp_errors(result, shared.pairs),
        "warp_error_edit": M.warp_errors(result, shared.pairs, edit),
    }
    if clip is not None:
        per.update(_clip_per_frame(clip, result, edit, shared))
    truth = inputs.truth
    if truth is not None:
        per["psnr_truth"] = [M.psnr(result[t], truth[t]) for t in range(len(result))]
        per["ssim_truth"] = [M.ssim(result[t], truth[t]) for t in range(len(result))]
        per["psnr_truth_edit"] = [M.psnr(result[t], truth[t], edit[t]) for t in range(len(result))]

    # PSNR of the pooled MSE (pixel-weighted): one identical frame does not make the mean inf
    counts = kept.reshape(len(kept), -1).sum(axis=1)
    used = [i for i in mean_frames if mse_kept[i] is not None]
    n = sum(int(counts[i]) for i in used)
    summary = {"psnr_kept": M.psnr_from_mse(sum(mse_kept[i] * counts[i] for i in used) / n) if n else None,
               "psnr_full": M.psnr_from_mse(_mean(mse_full, mean_frames))}
    for key in ("ssim_kept", "ssim_full", "delta_e", "hist_distance", "clip_region", "clip_score", "input_similarity"):
        summary[key] = _mean(per[key], mean_frames) if key in per else None
    if truth is not None:  # pooled like the kept region: one identical frame does not make the mean inf
        summary["psnr_truth"] = M.psnr_from_mse(_mean([M.mse(result[i], truth[i]) for i in mean_frames]))
        summary["ssim_truth"] = _mean(per["ssim_truth"], mean_frames)
        summary["psnr_truth_edit"] = M.psnr_from_mse(_mean([M.mse(result[i], truth[i], edit[i]) for i in mean_frames]))
    summary["warp_error"] = _mean(per["warp_error"])
    summary["warp_error_edit"] = _mean(per["warp_error_edit"])
    return {"path": str(res.path), "sidecar": res.sidecar, "summary": summary, "per_frame": per}


def references(inputs: EvalInputs, clip: ClipImageEncoder | None = None) -> References:
    """What every result of `inputs` is scored against (`score_result`): computed once per source."""
    src, edit, edited = inputs.source, inputs.edit_mask, inputs.edited_first
    shared = References(M.flow_pairs(src), None, None)
    if edited is not None:
        shared.ref_lab, shared.ref_hist = M.mean_lab(edited, edit[0]), M.lab_histogram(edited, edit[0])
    if clip is not None:
        shared.source_emb = clip.embed(list(src))
        if edited is not None:
            shared.edited_emb = clip.embed([edited])
            box = M.square_box(edit[0])
            shared.edited_crop_emb = clip.embed([M.crop(edited, box)]) if box is not None else None
    return shared


def evaluate(inputs: EvalInputs, clip_model: str | Path | None = None, include_first: bool = False,
             progress: Progress | None = None) -> dict:
    """Score every result; returns the report (plain data; see write_json for inf/None). `progress` hears what is
    being computed (phase "evaluate")."""
    progress = as_progress(progress)
    src, edit = inputs.source, inputs.edit_mask
    t = len(src)
    mean_frames = range(0 if include_first else 1, t)
    clip = None
    if clip_model:  # first: a bad model folder fails before the slow part
        from engine.evaluate.clip import ClipImageEncoder

        report(progress, "evaluate", message=f"CLIP model {clip_model}...")
        clip = ClipImageEncoder(clip_model)
    report(progress, "evaluate", message=f"optical flow on the source ({t - 1} pairs)...")
    shared = references(inputs, clip)
    src_warp, src_warp_edit = M.warp_errors(src, shared.pairs), M.warp_errors(src, shared.pairs, edit)
    scored = []
    for res in inputs.results:
        report(progress, "evaluate", message=f"scoring {res.path}...")
        scored.append(score_result(res, inputs, shared, clip, mean_frames))
    for entry, label, res in zip(scored, labels([r.path for r in inputs.results]), inputs.results):
        entry["label"] = label
        entry["made_with"] = made_with(res.path)
    h, w = src.shape[1:3]
    return {
        "version": REPORT_VERSION, "software": "lora-edit evaluate.py",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": {"config": None, "source": None, "mask": None, "edited_frame": None, "truth": None,
                   **inputs.origin,
                   "frames": t, "width": w, "height": h, "fps": inputs.fps,
                   "edit_coverage": float(edit.mean()),
                   "edit_coverage_per_frame": edit.reshape(t, -1).mean(axis=1).tolist()},
        "settings": {"mean_frames": [mean_frames.start, t - 1] if len(mean_frames) else None,
                     "include_first_frame": include_first,
                     "clip_model": str(clip_model) if clip_model else None, "flow": FLOW_METHOD,
                     "ssim": "Gaussian window sigma 1.5 (11x11), statistics over the region's pixels only, "
                             "RGB channels averaged",
                     "warp_error": "MSE in [0, 1] units of frame t vs frame t+1 warped back; per_frame[i] is the "
                                   "pair (i, i+1)",
                     "not_measured": NOT_MEASURED},
        "source": {"warp_error": _mean(src_warp), "warp_error_edit": _mean(src_warp_edit),
                   "per_frame": {"warp_error": src_warp, "warp_error_edit": src_warp_edit}},
        "results": scored,
    }


def made_with(path: Path) -> str | None:
    """What infer.py made a result with, from its sidecar (result.json beside result.mp4 or its frames/ folder):
    "no LoRA" or "LoRA <file> x<weight>", so side-by-sides say which panel is which. None: no sidecar."""
    path = Path(path)
    sidecar = path.with_suffix(".json") if path.is_file() else path.parent / "result.json"
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        if info.get("software") != "lora-edit infer.py":
            return None
        loras = [f"{Path(str(x['path'])).name} x{float(x.get('weight', 1.0)):g}" for x in info["loras"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # not infer.py's sidecar: the path alone labels the panel
    return "LoRA " + ", ".join(loras) if loras else "no LoRA"


def labels(paths: list[Path]) -> list[str]:
    """Short distinct names: the file name, with as many parent folders as it takes to tell them apart."""
    parts = [Path(p).resolve().parts for p in paths]
    for n in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-n:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]  # the same path twice


@dataclass
class EvaluateResult:
    """What evaluate.py writes and prints: the report (every per-frame value), its files ("report", "plot"), the
    summary table, and each result's means by its label."""

    report: dict
    files: dict[str, Path]
    summary: str
    means: dict[str, dict[str, float | None]]


def run_evaluation(inputs: EvalInputs, out: str | Path | None = None, clip_model: str | Path | None = None,
                   include_first: bool = False, progress: Progress | None = None) -> EvaluateResult:
    """evaluate.py's job: score every result of `inputs` (from `inputs_from_config` or `inputs_from_paths`) and write
    evaluation.json, evaluation.png and the side-by-side comparison.mp4 / comparison.png into `out` (default: the
    first result's folder). Prints nothing."""
    from engine.evaluate.compare import COMPARISON_STRIP, COMPARISON_VIDEO, write_comparison
    from engine.evaluate.plot import draw_plot
    from engine.evaluate.report import PLOT_NAME, REPORT_NAME, summary_text, write_json

    folder = ensure_output_folder(Path(out) if out else inputs.results[0].path.resolve().parent, "--out")
    report_data = evaluate(inputs, clip_model, include_first, progress)
    files = {"report": folder / REPORT_NAME, "plot": folder / PLOT_NAME,
             "comparison": folder / COMPARISON_VIDEO, "strip": folder / COMPARISON_STRIP}
    report_data["files"] = {k: str(v) for k, v in files.items()}
    draw_plot(report_data, files["plot"])
    panels = [("source", inputs.source)] + ([("ground truth", inputs.truth)] if inputs.truth is not None else [])
    titles = [e["label"] + (f"  ({e['made_with']})" if e.get("made_with") else "") for e in report_data["results"]]
    write_comparison(folder, panels + [(t, r.frames) for t, r in zip(titles, inputs.results)], inputs.fps)
    write_json(report_data, files["report"])
    means = {entry["label"]: dict(entry["summary"]) for entry in report_data["results"]}
    return EvaluateResult(report_data, files, summary_text(report_data, files), means)
