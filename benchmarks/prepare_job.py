"""Benchmark: preparing a 49-frame 832x480 job with --auto-mask, split by activity, vs a plain decode.

Makes a 4 s 1280x720 30 fps H.264 clip (a textured object moving over a textured background) and
its edited first frame (the object recoloured), then times, in one run with interleaved repeats
(median):

  plain     PyAV decode of every frame of the clip to RGB arrays (what any tool must pay)
  prepare   datasets.prepare_job.prepare_job into a fresh folder, split into
              decode   read_video_at of the window + resample + fit to 832x480
              flow     --auto-mask: difference mask + optical-flow propagation (+ GrabCut refinement)
              write    PNG frames, PNG masks, edited frame, edit.toml, manifest
              hash     content hashes of inputs and outputs (the manifest)
              preview  the preview videos and sheets (skipped with --no-preview)
            each as a ratio to plain
  rerun     the same prepare_job again on the finished folder (a no-op: hashes and manifest only)

Usage: python benchmarks/prepare_job.py [--repeats 3] [--no-preview] [--no-refine]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.prepare.job import PrepareRequest, prepare_job  # noqa: E402
from masks.auto import AutoMaskSettings  # noqa: E402

SRC_W, SRC_H, SRC_FPS, SECONDS = 1280, 720, 30, 4
PARTS = ("decode", "flow", "write", "hash", "preview")


def make_clip(folder: Path) -> tuple[Path, Path]:
    """The clip and its edited first frame (the ellipse's colours rotated)."""
    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.integers(0, 256, (SRC_H, SRC_W, 3)).astype(np.float32), (0, 0), 3.0)
    bg = cv2.normalize(bg, None, 30, 220, cv2.NORM_MINMAX).astype(np.uint8)
    tex = cv2.GaussianBlur(rng.random((512, 512)).astype(np.float32), (0, 0), 2.0)
    tex = cv2.normalize(tex, None, 0, 60, cv2.NORM_MINMAX)
    yy, xx = np.mgrid[0:SRC_H, 0:SRC_W]
    video, edited = folder / "clip.mp4", folder / "edited.png"
    with av.open(str(video), "w") as out:
        s = out.add_stream("libx264", rate=SRC_FPS)
        s.width, s.height, s.pix_fmt = SRC_W, SRC_H, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "18"}
        for i in range(SRC_FPS * SECONDS):
            cx, cy = 300 + 6 * i, 360 + 60 * np.sin(i / 15)
            m = ((xx - cx) / 180) ** 2 + ((yy - cy) / 130) ** 2 <= 1
            t = cv2.warpAffine(tex, np.float32([[1, 0, cx - 256], [0, 1, cy - 256]]), (SRC_W, SRC_H),
                               borderMode=cv2.BORDER_REFLECT)
            f = bg.copy()
            f[m] = np.stack([190 + t, 170 + t / 2, 30 + t], -1).clip(0, 255).astype(np.uint8)[m]
            if i == 0:
                e = f.copy()
                e[m] = e[m][:, ::-1]
                Image.fromarray(e).save(edited)
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode(None))
    return video, edited


def plain(video: Path) -> float:
    t = time.perf_counter()
    with av.open(str(video)) as c:
        c.streams.video[0].thread_type = "AUTO"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == SRC_FPS * SECONDS
    return time.perf_counter() - t


def prepare(video: Path, edited: Path, out: Path, preview: bool, refine: bool) -> dict[str, float]:
    req = PrepareRequest(video=video, edited_frame=edited, out=out, auto_mask=True, caption="an ellipse",
                         auto=AutoMaskSettings(refine=refine), preview=preview, progress=False)
    t = time.perf_counter()
    res = prepare_job(req)
    timings = {k: res.timings.get(k, 0.0) for k in PARTS}
    timings["total"] = time.perf_counter() - t
    timings["other"] = timings["total"] - sum(timings[k] for k in PARTS)
    timings["coverage"] = float(np.mean(res.meta["masks"]["coverage"]))
    t = time.perf_counter()
    assert prepare_job(req).ran == []
    timings["rerun"] = time.perf_counter() - t
    return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-preview", dest="preview", action="store_false")
    ap.add_argument("--no-refine", dest="refine", action="store_false")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        video, edited = make_clip(root)
        print(f"made {SECONDS} s of {SRC_W}x{SRC_H} @ {SRC_FPS} fps + edited frame in {time.perf_counter() - t0:.1f} s")
        plain(video)  # warm-up: imports, codec init, page cache
        prepare(video, edited, root / "warm", args.preview, args.refine)
        base: list[float] = []
        runs: list[dict[str, float]] = []
        for i in range(args.repeats):  # interleaved, so load changes hit both alike
            base.append(plain(video))
            runs.append(prepare(video, edited, root / f"job{i}", args.preview, args.refine))
    b = statistics.median(base)
    cols = (*PARTS, "other", "total", "rerun")
    med = {k: statistics.median(r[k] for r in runs) for k in cols}
    print(f"49 frames 832x480 with --auto-mask (refine={args.refine}, preview={args.preview}), "
          f"median of {args.repeats}; mean mask coverage {runs[-1]['coverage']:.1%}")
    print(f"{'':10s}{'plain':>9s}" + "".join(f"{k:>9s}" for k in cols))
    print(f"{'seconds':10s}{b:9.2f}" + "".join(f"{med[k]:9.2f}" for k in cols))
    print(f"{'/ plain':10s}{1:9.2f}" + "".join(f"{med[k] / b:9.2f}" for k in cols))


if __name__ == "__main__":
    main()
