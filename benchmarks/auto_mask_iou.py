"""`--auto-mask` against exact masks: per-frame IoU on the project's example clip and on toy-world clips.

    python -m benchmarks.auto_mask_iou            # the table (about 2 minutes on 2 shared cores)
    python -m benchmarks.auto_mask_iou --quick    # fewer cases

Example clip (`examples/clip.mp4`, 416x240 at 24 fps, its exact `mask.mp4` and `edited_first.png`): prepare.py
makes the job twice, once with `--auto-mask` and once with `--mask examples/mask.mp4`, and the two mask folders
are compared frame by frame. "before" is the earlier tracker on the same job: between the job's (resampled)
frames and without the shrink guard. Toy world (`examples/toy/world.py`, exact masks by construction): a recolor
edit of shape 0 on held-out clips, tracked through every frame ("now") and, as a job at a quarter of the clip's
rate would be before, only between every 4th frame ("before"). Both include the tracker's output margin
(0.5% of the longer side), so a perfect track scores below 1 (about 0.8 for the example's 17 px ball). Toy clips
whose edited shape enters the picture after frame 0 are skipped (nothing to track from the first frame). The
coverage column is the auto mask's for the example clip and the exact mask's for the toy clips.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import media
from datasets.prepare.job import PrepareRequest, prepare_job
from masks.auto import AutoMaskSettings, auto_mask

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BEFORE = AutoMaskSettings(keep_area=0.0, max_colour_change=1.0)  # the guard off
TOY_FRAMES, TOY_SIZE = 17, 96


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame IoU of bool [T, H, W] masks (1 where both are empty)."""
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def read_masks(folder: Path) -> np.ndarray:
    return np.stack([media.read_image(f)[..., 0] > 127 for f in media.list_image_files(folder)])


def example_row(fps: float, frames: int, size: tuple[int, int], tmp: Path) -> dict:
    common = dict(video=EXAMPLES / "clip.mp4", edited_frame=EXAMPLES / "edited_first.png", fps=fps, frames=frames,
                  size=size, caption="a red ball", progress=False, preview=False)
    t0 = time.perf_counter()
    auto = prepare_job(PrepareRequest(out=tmp / "auto", auto_mask=True, **common))
    seconds = time.perf_counter() - t0
    prepare_job(PrepareRequest(out=tmp / "exact", mask=EXAMPLES / "mask.mp4", **common))
    exact = read_masks(tmp / "exact" / "masks")
    now = read_masks(tmp / "auto" / "masks")
    job = np.stack([media.read_image(f) for f in media.list_image_files(tmp / "auto" / "source")])
    before = auto_mask(job, media.read_image(tmp / "auto" / "edited_first.png"), BEFORE).masks
    cov = now.reshape(len(now), -1).mean(1)
    return {"case": f"example clip, {frames} frames at {fps:g} fps, {size[0]}x{size[1]}", "now": iou(now, exact),
            "before": iou(before, exact), "coverage": (cov[0], cov.min()), "seconds": seconds,
            "warnings": len(auto.warnings)}


def toy_row(seed: int, step: int) -> dict | None:
    """None when the clip's edited shape is not visible in frame 0 (it enters later): nothing to track."""
    from examples.toy.world import edit_case

    case = edit_case(seed, "recolor", frames=TOY_FRAMES, size=TOY_SIZE)
    if case.mask[0].mean() < 0.005:
        return None
    picks = list(range(0, TOY_FRAMES, step))
    settings = AutoMaskSettings()
    now = auto_mask(case.source, case.edited[0], settings, picks=picks).masks
    before = auto_mask(case.source[picks], case.edited[0], BEFORE).masks
    truth = case.mask[picks]
    return {"case": f"toy seed {seed}, every {step}th of {TOY_FRAMES} frames, {TOY_SIZE}x{TOY_SIZE}",
            "now": iou(now, truth),
            "before": iou(before, truth), "coverage": (truth[0].mean(), truth.reshape(len(truth), -1).mean(1).min()),
            "seconds": 0.0, "warnings": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two example cases and two toy clips")
    args = parser.parse_args()
    rows = []
    cases = [(16, 49, (416, 240)), (4, 13, (416, 240)), (16, 49, (832, 480))]
    for fps, frames, size in cases[:2] if args.quick else cases:
        with tempfile.TemporaryDirectory() as d:
            rows.append(example_row(fps, frames, size, Path(d)))
    from examples.toy.world import heldout_seeds

    toy = [toy_row(seed, 4) for seed in heldout_seeds(4 if args.quick else 12)]
    rows += [r for r in toy if r is not None]
    print(f"{'case':<52} {'IoU now: min / mean':>20} {'before: min / mean':>19}  coverage: frame 0 -> lowest")
    for r in rows:
        print(f"{r['case']:<52} {r['now'].min():>10.3f} / {r['now'].mean():.3f} {r['before'].min():>10.3f} / "
              f"{r['before'].mean():.3f}  {r['coverage'][0]:.2%} -> {r['coverage'][1]:.2%}")


if __name__ == "__main__":
    main()
