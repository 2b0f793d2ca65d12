"""A preview a person can look at: what the model will be conditioned on, and what it must reconstruct.

For a job it writes, per sample kind, the condition video, the mask overlaid on the source and the
target (mp4 each), one contact-sheet PNG with a row per video, and `summary.json` with frames, size,
fps, mask coverage per frame and the number of samples per mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import media
from config.atomic import atomic_path, write_atomic
from config.loader import to_dict
from config.schema import Config
from datasets.job import Job, inference_sample_for, training_samples
from datasets.samples import Sample

EDIT_TINT = np.array([255, 40, 40], dtype=np.float32)


def to_uint8(video: np.ndarray | torch.Tensor) -> np.ndarray:
    """float [3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3]."""
    v = torch.as_tensor(video, dtype=torch.float32)  # torch: multi-threaded, much faster than numpy here
    return ((v.permute(1, 2, 3, 0) + 1.0) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8).numpy()


def overlay(frames: np.ndarray, generate: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Tint the regions to generate (bool [T, H, W]) red over uint8 frames [T, H, W, 3]."""
    out = frames.copy()
    tinted = frames[generate].astype(np.float32) * (1 - alpha) + EDIT_TINT * alpha + 0.5
    out[generate] = np.clip(tinted, 0, 255).astype(np.uint8)
    return out


def contact_sheet(rows: list[tuple[str, np.ndarray]], columns: int = 8, thumb_width: int = 208) -> Image.Image:
    """One row per labelled video, `columns` evenly spaced frames each (fewer if the video is shorter)."""
    n = max(len(v) for _, v in rows)
    picks = np.unique(np.linspace(0, n - 1, min(columns, n)).round().astype(int))
    h0, w0 = rows[0][1].shape[1:3]
    tw, th = thumb_width, max(1, round(thumb_width * h0 / w0))
    sheet = Image.new("RGB", (tw * len(picks), th * len(rows)), (16, 16, 16))
    for r, (_, video) in enumerate(rows):
        for c, i in enumerate(picks):
            if i < len(video):
                sheet.paste(Image.fromarray(video[i]).resize((tw, th), Image.BILINEAR), (c * tw, r * th))
    return sheet


def _save_png(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def _write_sample(sample: Sample, source: np.ndarray, out: Path, fps: float) -> dict:
    """The three videos and the contact sheet of one sample; returns its summary entry."""
    generate = sample.m_condition[0].numpy() < 0.5
    cond = to_uint8(sample.v_condition)
    videos = [("condition", cond), ("mask", overlay(source, generate))]
    if sample.v_target is not None:
        videos.append(("target", to_uint8(sample.v_target)))
    files = {}
    for label, video in videos:
        path = out / f"{sample.name}_{label}.mp4"
        media.write_video(path, video, fps, preset="veryfast")  # a preview: speed over size
        files[label] = path.name
    sheet = out / f"{sample.name}_sheet.png"
    _save_png(contact_sheet(videos), sheet)
    files["sheet"] = sheet.name
    return {
        "name": sample.name, "kind": sample.kind, "frames": sample.num_frames, "prompt": sample.prompt,
        "generate_fraction_per_frame": [round(float(x), 4) for x in generate.reshape(len(generate), -1).mean(1)],
        "files": files,
    }


def write_preview(cfg: Config, job: Job, out: str | Path) -> dict:
    """Write the preview of every training sample and of the inference sample; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = training_samples(cfg, job)
    entries = []
    for samples in stages.values():
        for s in samples:
            entries.append(_write_sample(s, job.frames[s.span[0]:s.span[1]], out, job.fps))
    if job.edited_first is not None:
        entries.append(_write_sample(inference_sample_for(cfg, job), job.frames, out, job.fps))
    w, h = job.size
    summary = {
        "frames": int(len(job.frames)), "width": w, "height": h, "fps": job.fps,
        "source_size": list(job.fit.src_size), "resize_mode": job.fit.mode,
        "source_times": [round(float(t), 4) for t in job.source_times],
        "mask_coverage_per_frame": [round(float(x), 4) for x in job.edit_mask.reshape(len(job.frames), -1).mean(1)],
        "samples_per_mode": {k: len(v) for k, v in stages.items()},
        "training_mode": cfg.training.mode, "low_cost": cfg.training.low_cost,
        "samples": entries, "config": to_dict(cfg),
    }
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary
