"""A preview a person can look at: what the model will be conditioned on, and what it must reconstruct.

For a job it writes, per sample kind, the condition video, the mask overlaid on the source and the
target (mp4 each), one contact-sheet PNG with a labelled row per video and labelled frames (every frame up to
17, else which ones), and `summary.json` with frames, size, fps, mask coverage per frame and the number of
samples per mode. The mask is drawn as a tint plus an outline in a colour chosen against the colours it covers
(a red object gets a cyan or green overlay), on videos enlarged for viewing when the job is small.
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
from media.viewing import enlarge, labelled_sheet, outlined_overlay, view_scale


def to_uint8(video: np.ndarray | torch.Tensor) -> np.ndarray:
    """float [3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3]."""
    v = torch.as_tensor(video, dtype=torch.float32)  # torch: multi-threaded, much faster than numpy here
    return ((v.permute(1, 2, 3, 0) + 1.0) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8).numpy()


def overlay(frames: np.ndarray, generate: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """The regions to generate (bool [T, H, W]) over uint8 frames [T, H, W, 3]: a tint and an outline in the
    colour that contrasts most with the region (media.viewing.outlined_overlay), at the frames' size."""
    return outlined_overlay(frames, generate, alpha=alpha)


def contact_sheet(rows: list[tuple[str, np.ndarray]], columns: int = 17, thumb_width: int = 160) -> Image.Image:
    """One labelled row per video, every frame labelled with its index (all frames up to `columns`)."""
    return Image.fromarray(labelled_sheet(rows, columns, thumb_width))


def _save_png(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def _write_sample(sample: Sample, source: np.ndarray, out: Path, fps: float) -> dict:
    """The three videos and the contact sheet of one sample; returns its summary entry."""
    generate = sample.m_condition[0].numpy() < 0.5
    k = view_scale(*source.shape[1:3])  # small jobs: enlarged (nearest), so the outline is thin and visible
    big = enlarge(generate[..., None], k)[..., 0]
    cond = enlarge(to_uint8(sample.v_condition), k)
    videos = [("condition", cond), ("mask", overlay(enlarge(source, k), big))]
    if sample.v_target is not None:
        videos.append(("target", enlarge(to_uint8(sample.v_target), k)))
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
